"""A second, minimal decoder for the artefacts of docs/protocol.md, written from the document
alone: it imports nothing from the project. The golden vectors must read the same through it as
through the reference implementation. Errors are plain ValueError: this decoder states the format,
it does not try to be helpful about bad input.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid
import zlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EDITIONS = {0: "hashed", 1: "plain"}


class Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"short read: {n} bytes at {self.pos} of {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{len(self.data) - self.pos} bytes after the last field")


def inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data) + d.flush()
    if not d.eof or d.unused_data:
        raise ValueError("not exactly one zlib stream")
    return out


def columns(c: Cursor, n: int, plain: bool) -> list[dict]:
    """`n` entries as the columns D, I, K (and the plain values) of §3."""
    digests = [c.take(32) for _ in range(n)]
    ids = [c.u(8) for _ in range(n)]
    kinds = list(c.take(n))
    if digests != sorted(set(digests)):
        raise ValueError("digests not strictly ascending")
    if any(k not in (1, 2) for k in kinds):
        raise ValueError("unknown kind")
    rows = [
        {"digest": d.hex(), "id": i, "kind": k} for d, i, k in zip(digests, ids, kinds, strict=True)
    ]
    if plain:
        for row in rows:
            value = c.take(c.u(2)).decode("utf-8")
            if hashlib.sha256(value.encode()).hexdigest() != row["digest"]:
                raise ValueError(f"value {value!r} does not match its digest")
            row["value"] = value
    return rows


def head(c: Cursor, magic: bytes) -> tuple[str, str]:
    """Magic, format version 1, edition and session: the first 22 bytes of §3 and §4."""
    if c.take(4) != magic or c.u(1) != 1:
        raise ValueError("bad magic or version")
    return EDITIONS[c.u(1)], str(uuid.UUID(bytes=c.take(16)))


def snapshot(data: bytes) -> dict:
    c = Cursor(inflate(data))
    edition, session = head(c, b"CSNP")
    serial, n, id_len = c.u(8), c.u(4), c.u(1)
    list_id = c.take(id_len).decode("ascii")
    entries = columns(c, n, edition == "plain")
    c.end()
    return {
        "type": "snapshot",
        "edition": edition,
        "session": session,
        "serial": serial,
        "list_id": list_id,
        "entries": entries,
    }


def delta(data: bytes) -> dict:
    c = Cursor(inflate(data))
    edition, session = head(c, b"CDLT")
    from_serial, to_serial = c.u(8), c.u(8)
    base, result = c.take(32).hex(), c.take(32).hex()
    n_removed, n_added, id_len = c.u(4), c.u(4), c.u(1)
    list_id = c.take(id_len).decode("ascii")
    removed = [c.take(32).hex() for _ in range(n_removed)]
    if removed != sorted(set(removed)):
        raise ValueError("removed digests not strictly ascending")
    added = columns(c, n_added, edition == "plain")
    c.end()
    return {
        "type": "delta",
        "edition": edition,
        "session": session,
        "from_serial": from_serial,
        "to_serial": to_serial,
        "base_checksum": base,
        "result_checksum": result,
        "list_id": list_id,
        "removed": removed,
        "added": added,
    }


def state_checksum(entries: list[dict]) -> str:
    """§2: SHA-256(D ‖ I ‖ K), entries ordered by digest."""
    rows = sorted(entries, key=lambda e: e["digest"])
    d = b"".join(bytes.fromhex(e["digest"]) for e in rows)
    i = b"".join(struct.pack(">Q", e["id"]) for e in rows)
    k = bytes(e["kind"] for e in rows)
    return hashlib.sha256(d + i + k).hexdigest()


def public_key(text: str) -> bytes:
    if not text.startswith("ed25519:"):
        raise ValueError("not an ed25519: key")
    raw = base64.b64decode(text[len("ed25519:") :], validate=True)
    if len(raw) != 32:
        raise ValueError("a public key is 32 bytes")
    return raw


def key_id(raw_public: bytes) -> bytes:
    return hashlib.sha256(raw_public).digest()[:8]


def envelope(data: bytes, keys: dict[bytes, bytes]) -> tuple[int, bytes]:
    """§5: check the structure, find the signer among `keys` (key id -> raw public key), verify
    the signature over bytes [0, 17+L), and only then return (payload type, payload)."""
    c = Cursor(data)
    if c.take(4) != b"CSE1":
        raise ValueError("bad envelope magic")
    ptype, signer, length = c.u(1), c.take(8), c.u(4)
    payload = c.take(length)
    signature = c.take(64)
    c.end()
    if signer not in keys:
        raise ValueError(f"unknown signer {signer.hex()}")
    Ed25519PublicKey.from_public_bytes(keys[signer]).verify(signature, data[: 17 + length])
    return ptype, payload


def compact_json(payload: bytes) -> dict:
    """Compact JSON with sorted keys: parsing and writing it again gives the same bytes."""
    value = json.loads(payload)
    again = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if again.encode() != payload:
        raise ValueError("payload is not compact sorted JSON")
    return value


def certificate(data: bytes, issuer: bytes, now: int) -> dict:
    ptype, payload = envelope(data, {key_id(issuer): issuer})
    if ptype != 1:
        raise ValueError("not a key certificate")
    cert = compact_json(payload)
    if not cert["not_before"] <= now < cert["not_after"]:
        raise ValueError("certificate not valid now")
    return cert


def bundle(data: bytes) -> tuple[list[bytes], bytes]:
    """§5: "CSB1" | u8 count | (u32 length | certificate) × count | u32 length | envelope."""
    c = Cursor(data)
    if c.take(4) != b"CSB1":
        raise ValueError("bad bundle magic")
    certs = [c.take(c.u(4)) for _ in range(c.u(1))]
    signed = c.take(c.u(4))
    c.end()
    return certs, signed


def notification(data: bytes, pinned_root: bytes, now: int) -> dict:
    """The chain from the pinned root (one signing certificate here), then the notification."""
    certs, signed = bundle(data)
    keys = {}
    for cert_bytes in certs:
        cert = certificate(cert_bytes, pinned_root, now)
        if cert["role"] != "signing":
            raise ValueError("only signing certificates are followed here")
        raw = public_key(cert["key"])
        keys[key_id(raw)] = raw
    ptype, payload = envelope(signed, keys)
    if ptype != 2:
        raise ValueError("not a notification")
    return compact_json(payload)
