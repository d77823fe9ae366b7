"""Golden vectors: docs/protocol.md's artefacts as fixed files (tests/vectors, written once by
make_vectors.py). Each is decoded by the reference implementation and by an independent decoder
written from the document (vector_decoder.py); both must give the content spelled out in
vectors.json, and re-encoding the decoded content must give the file back byte for byte."""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from pathlib import Path

import pytest
import vector_decoder as independent
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blocklist.artefacts import decode_delta, decode_snapshot, encode_delta, encode_snapshot
from blocklist.notification import Notification, open_notification, sign_notification
from blocklist.state import Edition, Entry, Kind, ListState
from signing import issue_certificate, key_id, parse_public_key, public_key_raw
from signing.certs import decode_bundle, open_certificate

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text())
FILES = MANIFEST["files"]
NOW = 1795852800  # the notification's creation time; the certificate is valid then
ROOT = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(MANIFEST["keys"]["root_seed"]))
SIGNING = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(MANIFEST["keys"]["signing_seed"]))
ROOT_RAW = public_key_raw(ROOT)


def read(name: str) -> bytes:
    data = (VECTORS / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == FILES[name]["sha256"], f"{name} changed"
    return data


def content(name: str) -> dict:
    """What the file holds, as vectors.json spells it out (without the file's own hash)."""
    return {k: v for k, v in FILES[name].items() if k != "sha256"}


def of_type(kind: str) -> list[str]:
    return sorted(n for n, f in FILES.items() if f["type"] == kind)


def entry_rows(state: ListState) -> list[dict]:
    return [
        {
            "digest": e.digest.hex(),
            "id": e.entry_id,
            "kind": int(e.kind),
            **({"value": e.value} if state.plain else {}),
        }
        for e in state
    ]


def manifest_state(entries: list[dict], plain: bool) -> ListState:
    return ListState.from_entries(
        [
            Entry(bytes.fromhex(e["digest"]), e["id"], Kind(e["kind"]), e.get("value"))
            for e in entries
        ],
        plain,
    )


# ------------------------------------------------------------------------ examples in the doc


def test_digest_and_empty_checksum_examples_of_the_doc() -> None:
    digest = "1f30273176bf43428242811a3bd5e04653804cff849e2ac73a14aa6e00c66a48"
    assert Entry.from_value("blocked.example", 1, Kind.DOMAIN).digest.hex() == digest
    assert FILES["snapshot-doc-example.bin"]["entries"][0]["digest"] == digest
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert ListState.empty().checksum.hex() == empty == MANIFEST["checksums"]["empty"]
    assert independent.state_checksum([]) == empty


def test_snapshot_example_of_the_doc_byte_for_byte() -> None:
    """protocol.md §3: hashed, one entry blocked.example with id 1, serial 7, list id demo."""
    session = uuid.UUID(FILES["snapshot-doc-example.bin"]["session"]).bytes
    expected = (
        bytes.fromhex("43534e50 01 00")
        + session
        + bytes.fromhex("0000000000000007 00000001 04 64656d6f")
        + hashlib.sha256(b"blocked.example").digest()
        + bytes.fromhex("0000000000000001 01")
    )
    assert zlib.decompress(read("snapshot-doc-example.bin")) == expected


# ------------------------------------------------------------------- snapshots and deltas


@pytest.mark.parametrize("name", of_type("snapshot"))
def test_snapshot_vector(name: str) -> None:
    data, want = read(name), content(name)
    assert independent.snapshot(data) == want
    info, state = decode_snapshot(data)
    ours = {
        "type": "snapshot",
        "edition": info.edition.label,
        "session": str(info.session),
        "serial": info.serial,
        "list_id": info.list_id,
        "entries": entry_rows(state),
    }
    assert ours == want
    assert state.checksum.hex() == independent.state_checksum(want["entries"])
    again = encode_snapshot(
        manifest_state(want["entries"], want["edition"] == "plain"),
        want["list_id"],
        Edition.parse(want["edition"]),
        uuid.UUID(want["session"]),
        want["serial"],
    )
    assert zlib.decompress(again) == zlib.decompress(data)
    assert again == data


@pytest.mark.parametrize("name", of_type("delta"))
def test_delta_vector(name: str) -> None:
    data, want = read(name), content(name)
    assert independent.delta(data) == want
    d = decode_delta(data)
    plain = d.edition is Edition.PLAIN
    ours = {
        "type": "delta",
        "edition": d.edition.label,
        "session": str(d.session),
        "from_serial": d.from_serial,
        "to_serial": d.to_serial,
        "base_checksum": d.base_checksum.hex(),
        "result_checksum": d.result_checksum.hex(),
        "list_id": d.list_id,
        "removed": [r.hex() for r in d.removed],
        "added": entry_rows(ListState.from_entries(d.added, plain)),
    }
    assert ours == want
    checks = MANIFEST["checksums"]
    assert (want["base_checksum"], want["result_checksum"]) == (
        checks["serial_6"],
        checks["serial_7"],
    )
    again = encode_delta(d)
    assert zlib.decompress(again) == zlib.decompress(data)
    assert again == data


def test_delta_turns_serial_6_into_the_serial_7_snapshot() -> None:
    """Applying the delta vector to serial 6 gives exactly the serial 7 snapshot vector's state,
    through both decoders' readings of the checksums."""
    from blocklist.artefacts import apply_delta

    snap = FILES["snapshot-plain.bin"]
    delta = decode_delta(read("delta-plain.bin"))
    base_rows = [
        e for e in snap["entries"] if e["id"] == 1
    ]  # serial 6 kept blocked.example, and had old.example (id 9)
    old = hashlib.sha256(b"old.example").hexdigest()
    base_rows.append({"digest": old, "id": 9, "kind": 1, "value": "old.example"})
    base = manifest_state(base_rows, plain=True)
    assert base.checksum.hex() == MANIFEST["checksums"]["serial_6"]
    result = apply_delta(base, delta)
    assert entry_rows(result) == snap["entries"]
    assert result.checksum.hex() == independent.state_checksum(snap["entries"])


# ------------------------------------------------------------- certificate and notification


def test_certificate_vector() -> None:
    data, want = read("certificate.bin"), FILES["certificate.bin"]
    assert independent.certificate(data, ROOT_RAW, NOW) == want["payload"]
    cert = open_certificate(data, {key_id(ROOT_RAW): ROOT_RAW})
    p = want["payload"]
    assert (cert.role.value, cert.name, cert.issuer_key_id) == (
        p["role"],
        p["name"],
        key_id(ROOT_RAW),
    )
    assert (cert.not_before, cert.not_after, cert.issued) == (
        p["not_before"],
        p["not_after"],
        p["issued"],
    )
    assert cert.key == parse_public_key(p["key"]) == public_key_raw(SIGNING)
    again = issue_certificate(
        ROOT, cert.key, cert.role, cert.not_before, cert.not_after, cert.name, issued=cert.issued
    )
    assert again == data


def test_notification_vector() -> None:
    data, want = read("notification.bin"), FILES["notification.bin"]
    payload = independent.notification(data, ROOT_RAW, NOW)
    assert payload == want["payload"]
    ours = open_notification(data, [ROOT_RAW], NOW)
    assert json.loads(ours.to_bytes()) == payload
    certs, _ = decode_bundle(data, 256 * 1024)
    assert certs == [read("certificate.bin")]
    # Its file references name the other vectors, with their sizes and hashes.
    for ref in [payload["snapshot"], *payload["deltas"]]:
        body = read(ref["uri"])
        assert (len(body), hashlib.sha256(body).hexdigest()) == (ref["size"], ref["sha256"])
    assert payload["state_checksum"] == MANIFEST["checksums"]["serial_7"]
    assert payload["entry_count"] == len(FILES["snapshot-hashed.bin"]["entries"])
    again = sign_notification(Notification.model_validate(payload), SIGNING, certs)
    assert again == data


def test_independent_decoder_rejects_what_the_doc_forbids() -> None:
    """The second decoder is no rubber stamp: a flipped signature byte, trailing bytes, a
    reordered column and a wrong root all fail in it, as in the reference implementation."""
    data = bytearray(read("notification.bin"))
    data[-1] ^= 1
    with pytest.raises(InvalidSignature):
        independent.notification(bytes(data), ROOT_RAW, NOW)
    with pytest.raises(ValueError, match="after the last field"):
        independent.bundle(read("notification.bin") + b"\x00")
    with pytest.raises(ValueError, match="unknown signer"):
        independent.notification(read("notification.bin"), public_key_raw(SIGNING), NOW)
    raw = zlib.decompress(read("snapshot-hashed.bin"))
    start = 35 + 4  # header and list id "demo"
    swapped = (
        raw[:start] + raw[start + 32 : start + 64] + raw[start : start + 32] + raw[start + 64 :]
    )
    with pytest.raises(ValueError, match="ascending"):
        independent.snapshot(zlib.compress(swapped))
    with pytest.raises(ValueError, match="not valid now"):
        independent.certificate(read("certificate.bin"), ROOT_RAW, 1802776000)
