"""Root-signed key sets: k-of-n roots, root rotation, revocation, compromise recovery.

Two documents, each a *multi-signed document* (several signatures over the same bytes, so a
threshold of root keys can vouch for it)::

    magic b"CSM1" | u8 type | u32 payload length L | payload (L bytes)
                  | u8 signature count | (8-byte key id | 64-byte Ed25519 signature) * count

Each signature covers bytes [0, 9+L) (magic, type, length, payload). At most 8 signatures; one
key id at most once. The whole document is at most 4096 bytes, so it fits a bundle slot.

Root document (type 4): which root keys are trusted and how many of them must sign::

    {"v":1,"type":"cordon-root","version":M,"keys":["ed25519:…",…],"threshold":k,"issued":t}

Version M+1 must be signed by a threshold of the root set in force *and* by a threshold of its
own keys (the old roots certify the new ones, the new ones prove they exist). The set an ASP
pins in its config (`root_keys`, `root_threshold`) is the anchor; a bundle carries the rotation
documents since the ceremony, in order. Documents before the first one the anchor can verify
are skipped (an ASP installed after a rotation pinned the newer keys); after it, versions go up
by exactly one. A retired root is never trusted again.

Key set (type 3): the current online signing keys, signed by a threshold of the roots::

    {"v":1,"type":"cordon-keyset","version":N,"root_version":M,"issued":t,
     "keys":[{"key":"ed25519:…","name":"…","not_before":t,"not_after":t},…],
     "revoked":["<key id hex>",…],"recover_session":null|"<uuid>"}

An ASP remembers the highest key-set version and root version it has verified (`TrustFloor`)
and refuses older ones, so a key left out of version N (renewed) or listed in `revoked` signs
nothing for it once it has seen N. `recover_session` is the root-signed recovery after an
online key was stolen: it names the session the authority now publishes in, and an ASP accepts
that session's serials whatever serial a stolen key made it record (see blocklist/sync/replay.py).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signing.checks import check_validity_window
from signing.errors import CertificateError, EnvelopeError, KeyFileError, SignatureError
from signing.keys import KEY_ID_SIZE, format_public_key, key_id, parse_public_key, public_key_raw

MULTI_MAGIC = b"CSM1"
MAX_DOCUMENT_SIZE = 4096
MAX_SIGNATURES = 8
MAX_ROOT_KEYS = 8
MAX_SET_KEYS = 16
MAX_REVOKED = 64

_HEAD = struct.Struct(">4sBI")
_SIG_SIZE = KEY_ID_SIZE + 64
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DocType(IntEnum):
    KEY_SET = 3
    ROOT = 4


@dataclass(frozen=True, slots=True)
class RootSet:
    keys: tuple[bytes, ...]  # raw public keys
    threshold: int
    version: int | None = None  # None: the anchor an ASP pinned, version not stated

    @property
    def ids(self) -> dict[bytes, bytes]:
        return {key_id(k): k for k in self.keys}


@dataclass(frozen=True, slots=True)
class SetKey:
    key: bytes
    name: str
    not_before: int
    not_after: int

    @property
    def key_id(self) -> bytes:
        return key_id(self.key)


@dataclass(frozen=True)
class KeySet:
    version: int
    root_version: int
    issued: int
    keys: tuple[SetKey, ...]
    revoked: frozenset[bytes]
    recover_session: str | None = None
    signers: frozenset[bytes] = field(default=frozenset())


@dataclass(frozen=True, slots=True)
class TrustFloor:
    """The newest root and key-set versions an ASP has verified; older ones are refused."""

    root_version: int = 0
    keyset_version: int = 0


# ---------------------------------------------------------------- multi-signed documents


def sign_document(signers: Sequence[Ed25519PrivateKey], doc_type: DocType, payload: bytes) -> bytes:
    """A multi-signed document over `payload`, one signature per key in `signers`."""
    if not 1 <= len(signers) <= MAX_SIGNATURES:
        raise EnvelopeError("oversized", f"a document carries 1 to {MAX_SIGNATURES} signatures")
    ids = [key_id(public_key_raw(k)) for k in signers]
    if len(set(ids)) != len(ids):
        raise EnvelopeError("length_mismatch", "the same key would sign a document twice")
    signed = _HEAD.pack(MULTI_MAGIC, int(doc_type), len(payload)) + payload
    parts = [signed, bytes([len(signers)])]
    for kid, key in zip(ids, signers, strict=True):
        parts += [kid, key.sign(signed)]
    data = b"".join(parts)
    if len(data) > MAX_DOCUMENT_SIZE:
        raise EnvelopeError(
            "oversized", f"document would be {len(data)} bytes; at most {MAX_DOCUMENT_SIZE}"
        )
    return data


def add_signature(document: bytes, signer: Ed25519PrivateKey) -> bytes:
    """The same document with one more signature (root holders sign one after another)."""
    doc_type, payload, sigs = _split(document)
    kid = key_id(public_key_raw(signer))
    if any(k == kid for k, _ in sigs):
        raise EnvelopeError("length_mismatch", f"key {kid.hex()} already signed this document")
    if len(sigs) >= MAX_SIGNATURES:
        raise EnvelopeError("oversized", f"a document carries at most {MAX_SIGNATURES} signatures")
    signed = _HEAD.pack(MULTI_MAGIC, doc_type, len(payload)) + payload
    sigs.append((kid, signer.sign(signed)))
    out = signed + bytes([len(sigs)]) + b"".join(k + s for k, s in sigs)
    if len(out) > MAX_DOCUMENT_SIZE:
        raise EnvelopeError("oversized", f"document would be {len(out)} bytes")
    return out


def is_document(data: bytes) -> bool:
    return bytes(data[:4]) == MULTI_MAGIC


def _split(data: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    data = bytes(data)
    if len(data) > MAX_DOCUMENT_SIZE:
        raise EnvelopeError("oversized", f"document is {len(data)} bytes; at most 4096")
    if len(data) < _HEAD.size + 1:
        raise EnvelopeError("truncated", f"document is only {len(data)} bytes")
    magic, doc_type, length = _HEAD.unpack_from(data)
    if magic != MULTI_MAGIC:
        raise EnvelopeError("bad_magic", f"document magic is {magic!r}, expected {MULTI_MAGIC!r}")
    end = _HEAD.size + length
    if end + 1 > len(data):
        raise EnvelopeError("truncated", f"document declares a {length}-byte payload; too short")
    count = data[end]
    if count > MAX_SIGNATURES:
        raise EnvelopeError("oversized", f"document declares {count} signatures")
    if len(data) != end + 1 + count * _SIG_SIZE:
        raise EnvelopeError(
            "length_mismatch", f"document length does not match its {count} signatures"
        )
    sigs = []
    for i in range(count):
        at = end + 1 + i * _SIG_SIZE
        sigs.append((data[at : at + KEY_ID_SIZE], data[at + KEY_ID_SIZE : at + _SIG_SIZE]))
    if len({k for k, _ in sigs}) != count:
        raise EnvelopeError("length_mismatch", "document is signed twice by the same key id")
    return doc_type, data[_HEAD.size : end], sigs


def open_document(
    data: bytes, expected: DocType, keys: Mapping[bytes, bytes], threshold: int, what: str
) -> tuple[bytes, frozenset[bytes]]:
    """Verify that at least `threshold` distinct keys of `keys` signed `data`; return the
    payload and the ids of the keys whose signatures verified. Other signers are ignored."""
    doc_type, payload, sigs = _split(data)
    if doc_type != expected:
        raise EnvelopeError("wrong_type", f"{what} has type {doc_type}, expected {int(expected)}")
    signed = bytes(data[: _HEAD.size + len(payload)])
    good: set[bytes] = set()
    for kid, sig in sigs:
        raw = keys.get(kid)
        if raw is None:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(sig, signed)
        except (InvalidSignature, ValueError):
            raise SignatureError(
                "bad_signature", f"signature by key {kid.hex()} on {what} does not verify"
            ) from None
        good.add(kid)
    if len(good) < threshold:
        trusted = ", ".join(k.hex() for k in keys) or "none"
        raise SignatureError(
            "unknown_key",
            f"{what} carries {len(good)} valid signature(s) from trusted root keys, "
            f"{threshold} needed (trusted: {trusted})",
        )
    return payload, frozenset(good)


# ---------------------------------------------------------------- payloads


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(payload: bytes, fields: frozenset[str], kind: str, what: str) -> dict:
    from signing.certs import strict_json  # certs imports this module

    obj = strict_json(payload, what)
    if not isinstance(obj, dict) or set(obj) != fields:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CertificateError(
            "bad_certificate", f"{what} must have exactly the fields {sorted(fields)}; got {got}"
        )
    if obj["v"] != 1 or obj["type"] != kind:
        raise CertificateError("bad_certificate", f"{what} is not a version 1 {kind}")
    if not _is_int(obj["version"]) or obj["version"] < 1 or not _is_int(obj["issued"]):
        raise CertificateError("bad_certificate", f"{what}: version and issued must be integers")
    return obj


def _parse_key(text: Any, what: str) -> bytes:
    try:
        return parse_public_key(text)
    except KeyFileError as exc:
        raise CertificateError("bad_certificate", f"{what}: {exc.message}") from None


_ROOT_FIELDS = frozenset({"v", "type", "version", "keys", "threshold", "issued"})
_SET_FIELDS = frozenset(
    {"v", "type", "version", "root_version", "issued", "keys", "revoked", "recover_session"}
)
_SET_KEY_FIELDS = frozenset({"key", "name", "not_before", "not_after"})


def root_payload(keys: Sequence[bytes], threshold: int, version: int, issued: int) -> bytes:
    check_threshold(len(keys), threshold)
    return _dumps(
        {
            "v": 1,
            "type": "cordon-root",
            "version": version,
            "keys": [format_public_key(k) for k in keys],
            "threshold": threshold,
            "issued": issued,
        }
    )


def check_threshold(n: int, k: int) -> None:
    if not 1 <= n <= MAX_ROOT_KEYS or not _is_int(k) or not 1 <= k <= n:
        raise CertificateError(
            "bad_certificate",
            f"a root set needs 1 to {MAX_ROOT_KEYS} keys and a threshold from 1 to their "
            f"number; got {k} of {n}",
        )


def parse_root(payload: bytes, what: str) -> RootSet:
    obj = _loads(payload, _ROOT_FIELDS, "cordon-root", what)
    keys = obj["keys"]
    if not isinstance(keys, list):
        raise CertificateError("bad_certificate", f"{what}: keys must be a list")
    raws = tuple(_parse_key(k, what) for k in keys)
    if len(set(raws)) != len(raws):
        raise CertificateError("bad_certificate", f"{what} lists a root key twice")
    check_threshold(len(raws), obj["threshold"])
    return RootSet(raws, obj["threshold"], obj["version"])


def keyset_payload(
    *,
    version: int,
    root_version: int,
    issued: int,
    keys: Sequence[SetKey],
    revoked: Iterable[bytes] = (),
    recover_session: str | None = None,
) -> bytes:
    revoked_ids = sorted({bytes(r).hex() for r in revoked})
    live = {k.key_id.hex() for k in keys}
    if live & set(revoked_ids):
        raise CertificateError("bad_certificate", "a key cannot be both current and revoked")
    if recover_session is not None and not _UUID.match(recover_session):
        raise CertificateError("bad_certificate", "recover_session must be a lowercase UUID")
    return _dumps(
        {
            "v": 1,
            "type": "cordon-keyset",
            "version": version,
            "root_version": root_version,
            "issued": issued,
            "keys": [
                {
                    "key": format_public_key(k.key),
                    "name": k.name,
                    "not_before": k.not_before,
                    "not_after": k.not_after,
                }
                for k in keys
            ],
            "revoked": revoked_ids,
            "recover_session": recover_session,
        }
    )


def parse_keyset(payload: bytes, what: str, signers: frozenset[bytes] = frozenset()) -> KeySet:
    obj = _loads(payload, _SET_FIELDS, "cordon-keyset", what)
    if not _is_int(obj["root_version"]) or obj["root_version"] < 1:
        raise CertificateError("bad_certificate", f"{what}: root_version must be positive")
    keys, revoked = obj["keys"], obj["revoked"]
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_SET_KEYS:
        raise CertificateError("bad_certificate", f"{what} must list 1 to {MAX_SET_KEYS} keys")
    if not isinstance(revoked, list) or len(revoked) > MAX_REVOKED:
        raise CertificateError("bad_certificate", f"{what}: revoked must be a short list")
    parsed = []
    for item in keys:
        if not isinstance(item, dict) or set(item) != _SET_KEY_FIELDS:
            raise CertificateError("bad_certificate", f"{what}: a key entry is malformed")
        nb, na = item["not_before"], item["not_after"]
        if not (_is_int(nb) and _is_int(na) and nb < na) or not isinstance(item["name"], str):
            raise CertificateError("bad_certificate", f"{what}: a key has a bad window or name")
        parsed.append(SetKey(_parse_key(item["key"], what), item["name"], nb, na))
    revoked_ids: set[bytes] = set()
    for item in revoked:
        if not isinstance(item, str) or not re.fullmatch(r"[0-9a-f]{16}", item):
            raise CertificateError("bad_certificate", f"{what}: revoked ids are 16 hex digits")
        revoked_ids.add(bytes.fromhex(item))
    if {k.key_id for k in parsed} & revoked_ids or len({k.key for k in parsed}) != len(parsed):
        raise CertificateError("bad_certificate", f"{what} lists a key twice or as revoked")
    session = obj["recover_session"]
    if session is not None and not (isinstance(session, str) and _UUID.match(session)):
        raise CertificateError("bad_certificate", f"{what}: recover_session must be a UUID")
    return KeySet(
        obj["version"],
        obj["root_version"],
        obj["issued"],
        tuple(parsed),
        frozenset(revoked_ids),
        session,
        signers,
    )


def peek_keyset(data: bytes) -> KeySet | None:
    """The key set in a document, NOT verified (the authority reading its own file), or None."""
    if not is_document(data):
        return None
    doc_type, payload, _ = _split(data)
    return parse_keyset(payload, "key set") if doc_type == DocType.KEY_SET else None


# ---------------------------------------------------------------- walking the trust


@dataclass(frozen=True)
class Trust:
    """What a verified set of trust documents allows."""

    roots: RootSet
    keyset: KeySet
    signing_keys: dict[bytes, bytes]  # key id -> raw, every key of the set (windows below)
    not_before: dict[bytes, int]
    not_after: dict[bytes, int]

    @property
    def floor(self) -> TrustFloor:
        return TrustFloor(self.root_version, self.keyset.version)

    @property
    def root_version(self) -> int:
        return self.roots.version or self.keyset.root_version

    def check_signer(self, kid: bytes, now: int) -> None:
        """CertificateError unless `kid` is a current key of the set, valid at `now`."""
        if kid in self.keyset.revoked:
            raise CertificateError(
                "revoked", f"key {kid.hex()} is revoked by key set {self.keyset.version}"
            )
        if kid not in self.signing_keys:
            raise CertificateError(
                "uncertified_key",
                f"key {kid.hex()} is not in key set {self.keyset.version}",
            )
        check_validity_window(
            self.not_before[kid], self.not_after[kid], now, f"signing key {kid.hex()}"
        )


def verify_trust(
    anchor: RootSet, documents: Sequence[bytes], floor: TrustFloor | None = None
) -> Trust:
    """Walk root rotations from `anchor`, then verify the key set (the last document) with the
    root set in force. Refuses versions below `floor`. Key windows are checked by the caller
    (`Trust.check_signer`) at the time it trusts: now, or the signed time of a stored file."""
    floor = floor or TrustFloor()
    if not documents:
        raise CertificateError("uncertified_key", "no key set: no key may sign")
    *rotations, keyset_doc = documents
    current = anchor
    accepted = False
    for index, doc in enumerate(rotations):
        what = f"root document {index + 1} of {len(rotations)}"
        try:
            payload, _ = open_document(doc, DocType.ROOT, current.ids, current.threshold, what)
        except SignatureError:
            if accepted:
                raise
            continue  # history before the root this ASP pinned
        new = parse_root(payload, what)
        if current.version is not None and new.version != current.version + 1:
            raise CertificateError(
                "bad_certificate",
                f"{what} has version {new.version}; {current.version + 1} expected",
            )
        open_document(doc, DocType.ROOT, new.ids, new.threshold, f"{what} (its own keys)")
        current, accepted = new, True
    payload, signers = open_document(
        keyset_doc, DocType.KEY_SET, current.ids, current.threshold, "key set"
    )
    keyset = parse_keyset(payload, "key set", signers)
    if current.version is not None and keyset.root_version != current.version:
        raise CertificateError(
            "bad_certificate",
            f"key set {keyset.version} names root version {keyset.root_version}, but root "
            f"version {current.version} is in force",
        )
    root_version = current.version or keyset.root_version
    if root_version < floor.root_version:
        raise CertificateError(
            "superseded",
            f"root version {root_version} is older than root version {floor.root_version} "
            "already seen: a retired root cannot vouch for keys",
        )
    if keyset.version < floor.keyset_version:
        raise CertificateError(
            "superseded",
            f"key set {keyset.version} is older than key set {floor.keyset_version} already "
            "seen: its keys may have been renewed or revoked",
        )
    return Trust(
        current,
        keyset,
        {k.key_id: k.key for k in keyset.keys},
        {k.key_id: k.not_before for k in keyset.keys},
        {k.key_id: k.not_after for k in keyset.keys},
    )
