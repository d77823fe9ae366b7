"""Tests for the signing package: keys, key files, envelopes, trust chain, bundles, checks.

Real Ed25519 throughout; key files live in pytest's tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing import (
    BUNDLE_MAGIC,
    MAGIC,
    MAX_CERTIFICATE_SIZE,
    MAX_CERTIFICATES,
    CertificateError,
    EnvelopeError,
    FreshnessError,
    KeyFileError,
    PayloadType,
    PrivateKey,
    Role,
    RollbackError,
    SignatureError,
    SigningError,
    check_fresh,
    check_not_rollback,
    check_validity_window,
    decode_bundle,
    encode_bundle,
    format_public_key,
    generate_key,
    issue_certificate,
    key_id,
    key_id_hex,
    load_private_key,
    load_public_key,
    open_bundle,
    open_certificate,
    open_envelope,
    parse_public_key,
    peek_key_id,
    public_key_raw,
    save_private_key,
    save_public_key,
    sign_envelope,
    verify_chain,
)

NOW = 1_750_000_000
MAX = 1 << 20
NOTE = PayloadType.NOTIFICATION
CERT = PayloadType.KEY_CERTIFICATE

ROOT0 = generate_key()
ROOT1 = generate_key()
SIGNER = generate_key()
OTHER = generate_key()


def raw(key: PrivateKey) -> bytes:
    return public_key_raw(key)


def keymap(*keys: PrivateKey) -> dict[bytes, bytes]:
    return {key_id(raw(k)): raw(k) for k in keys}


def signing_cert(
    issuer: PrivateKey = ROOT1,
    subject: PrivateKey = SIGNER,
    not_before: int = NOW - 100,
    not_after: int = NOW + 1000,
) -> bytes:
    return issue_certificate(
        issuer, raw(subject), "signing", not_before, not_after, "online 1", issued=NOW - 100
    )


def rotation_cert(
    issuer: PrivateKey = ROOT0,
    subject: PrivateKey = ROOT1,
    not_before: int = NOW - 1000,
    not_after: int = NOW + 10**6,
) -> bytes:
    return issue_certificate(
        issuer, raw(subject), Role.ROOT, not_before, not_after, "root 2", issued=NOW - 1000
    )


ENVELOPE = sign_envelope(SIGNER, NOTE, b'{"serial":7}')
ROTATION = rotation_cert()
SIGNING = signing_cert()
BUNDLE = encode_bundle([ROTATION, SIGNING], ENVELOPE)


def open_default_bundle(data: bytes) -> None:
    open_bundle(data, [raw(ROOT0)], NOTE, NOW, MAX)


# --- errors -----------------------------------------------------------------------------------


def test_errors_carry_reason_message_and_pickle() -> None:
    err = SignatureError("unknown_key", "signed by key 0011")
    assert isinstance(err, SigningError)
    assert err.reason == "unknown_key"
    assert str(err) == "signed by key 0011"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is SignatureError
    assert (back.reason, str(back)) == ("unknown_key", "signed by key 0011")


# --- keys -------------------------------------------------------------------------------------


def test_key_id_is_sha256_prefix_and_text_form_round_trips() -> None:
    pub = raw(ROOT0)
    assert len(pub) == 32
    assert len(key_id(pub)) == 8
    assert key_id_hex(pub) == key_id(pub).hex()
    text = format_public_key(pub)
    assert text.startswith("ed25519:") and len(text) == len("ed25519:") + 44
    assert parse_public_key(text) == pub
    assert parse_public_key(f"  {text}\n") == pub
    assert key_id(pub) != key_id(raw(ROOT1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ed25519:",
        "ed25519",
        "rsa:" + format_public_key(raw(ROOT0)).split(":")[1],
        "ED25519:" + format_public_key(raw(ROOT0)).split(":")[1],
        "ed25519:not base64!",
        "ed25519:" + format_public_key(raw(ROOT0)).split(":")[1].rstrip("="),  # unpadded
        format_public_key(raw(ROOT0))[:-2] + "B=",  # non-canonical: stray padding bits
        "ed25519:" + "A" * 40 + "AA==",  # 31 bytes
        "ed25519:" + "A" * 44 + "AAAA",  # 36 bytes
        "ed25519:é" + "A" * 43,
    ],
)
def test_parse_public_key_rejects_bad_forms(text: str) -> None:
    with pytest.raises(KeyFileError) as info:
        parse_public_key(text)
    assert info.value.reason == "bad_public_key"


def test_parse_public_key_rejects_non_text() -> None:
    with pytest.raises(KeyFileError):
        parse_public_key(b"ed25519:AAAA")  # type: ignore[arg-type]


def test_key_id_refuses_wrong_length() -> None:
    with pytest.raises(KeyFileError) as info:
        key_id(b"\x00" * 31)
    assert info.value.reason == "bad_public_key"


def test_private_key_file_round_trip_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    old_umask = os.umask(0)  # even with a permissive umask the file is 0600
    try:
        save_private_key(path, SIGNER)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert raw(load_private_key(path)) == raw(SIGNER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.pem"]  # no temp file left


def test_private_key_file_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "root.pem"
    save_private_key(path, ROOT0, passphrase="correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert raw(load_private_key(path, passphrase=b"correct horse")) == raw(ROOT0)
    for wrong in (None, "wrong"):
        with pytest.raises(KeyFileError) as info:
            load_private_key(path, passphrase=wrong)
        assert info.value.reason == "bad_key_file"
        assert str(path) in str(info.value)


def test_save_private_key_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    save_private_key(path, SIGNER)
    with pytest.raises(KeyFileError) as info:
        save_private_key(path, OTHER)
    assert info.value.reason == "exists"
    assert raw(load_private_key(path)) == raw(SIGNER)
    save_private_key(path, OTHER, overwrite=True)
    assert raw(load_private_key(path)) == raw(OTHER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_load_private_key_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.pem"
    save_private_key(path, SIGNER)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert info.value.reason == "insecure_permissions"
    assert f"{mode:04o}" in str(info.value)
    assert str(path) in str(info.value)


def test_load_private_key_accepts_owner_only_modes(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    save_private_key(path, SIGNER)
    path.chmod(0o400)
    assert raw(load_private_key(path)) == raw(SIGNER)


def _write_0600(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_load_private_key_refuses_garbage_and_other_algorithms(tmp_path: Path) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases = {
        "garbage.pem": b"this is not a key\n",
        "empty.pem": b"",
        "binary.pem": bytes(range(256)),
        "ec.pem": ec_pem,
        "public.pem": format_public_key(raw(SIGNER)).encode(),
        "big.pem": b"A" * (100 * 1024),
    }
    for name, data in cases.items():
        path = _write_0600(tmp_path / name, data)
        with pytest.raises(KeyFileError) as info:
            load_private_key(path)
        assert info.value.reason == "bad_key_file", name
        assert str(path) in str(info.value)


def test_load_private_key_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "nope.pem")
    assert info.value.reason == "missing"
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "dir")
    assert info.value.reason == "bad_key_file"
    os.mkfifo(tmp_path / "fifo", 0o600)  # must be refused, not block waiting for a writer
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "fifo")
    assert info.value.reason == "bad_key_file"


def test_public_key_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "root.pub"
    save_public_key(path, raw(ROOT0))
    assert path.read_text() == format_public_key(raw(ROOT0)) + "\n"
    assert load_public_key(path) == raw(ROOT0)
    with pytest.raises(KeyFileError) as info:
        save_public_key(path, raw(ROOT1))
    assert info.value.reason == "exists"
    bad = tmp_path / "bad.pub"
    bad.write_bytes(b"ed25519:short\n")
    with pytest.raises(KeyFileError) as info:
        load_public_key(bad)
    assert info.value.reason == "bad_key_file"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFileError):
        load_public_key(bad)
    with pytest.raises(KeyFileError) as info:
        load_public_key(tmp_path / "nope.pub")
    assert info.value.reason == "missing"


# --- envelope ---------------------------------------------------------------------------------


def test_envelope_round_trip_and_layout() -> None:
    env = open_envelope(ENVELOPE, NOTE, keymap(SIGNER), MAX)
    assert env.payload == b'{"serial":7}'
    assert env.type is NOTE
    assert env.key_id == key_id(raw(SIGNER))
    magic, ptype, kid, length = struct.unpack_from(">4sB8sI", ENVELOPE)
    assert (magic, ptype, kid, length) == (MAGIC, 2, env.key_id, 12)
    assert len(ENVELOPE) == 17 + 12 + 64
    assert peek_key_id(ENVELOPE) == env.key_id
    empty = sign_envelope(SIGNER, CERT, b"")
    assert open_envelope(empty, CERT, keymap(SIGNER), MAX).payload == b""


def test_every_single_byte_change_of_an_envelope_is_rejected() -> None:
    data = sign_envelope(SIGNER, NOTE, b"x1")
    keys = keymap(SIGNER, OTHER)
    reasons: set[str] = set()
    sig = len(data) - 64
    for offset in range(len(data)):
        # Every other value of the byte (so every single-bit flip too). Inside the signature,
        # where each try costs a verification, all values for its first and last bytes (the top
        # byte of S carries the S < L check) and the 9 usual flips elsewhere keep this fast.
        if offset < sig or offset in (sig, sig + 31, sig + 32, len(data) - 1):
            values = [v for v in range(256) if v != data[offset]]
        else:
            values = [data[offset] ^ m for m in (0xFF, 1, 2, 4, 8, 16, 32, 64, 128)]
        for value in values:
            changed = data[:offset] + bytes([value]) + data[offset + 1 :]
            with pytest.raises(SigningError) as info:
                open_envelope(changed, NOTE, keys, MAX)
            reasons.add(info.value.reason)
    assert {"bad_magic", "wrong_type", "unknown_key", "truncated", "bad_signature"} <= reasons


def test_envelope_wrong_key_and_unknown_key() -> None:
    kid = key_id(raw(SIGNER))
    with pytest.raises(SignatureError) as info:
        open_envelope(ENVELOPE, NOTE, {kid: raw(OTHER)}, MAX)  # right id, wrong key
    assert info.value.reason == "bad_signature"
    with pytest.raises(SignatureError) as info:
        open_envelope(ENVELOPE, NOTE, keymap(OTHER, ROOT0), MAX)
    assert info.value.reason == "unknown_key"
    assert kid.hex() in str(info.value)


def test_envelope_wrong_and_reserved_type() -> None:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(ENVELOPE, CERT, keymap(SIGNER), MAX)
    assert info.value.reason == "wrong_type"
    reserved = ENVELOPE[:4] + b"\x03" + ENVELOPE[5:]
    with pytest.raises(EnvelopeError) as info:
        open_envelope(reserved, NOTE, keymap(SIGNER), MAX)
    assert info.value.reason == "wrong_type"
    with pytest.raises(EnvelopeError) as info:
        sign_envelope(SIGNER, 3, b"")
    assert info.value.reason == "wrong_type"


def test_envelope_oversized_is_checked_before_anything() -> None:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(ENVELOPE, NOTE, keymap(SIGNER), len(ENVELOPE) - 1)
    assert info.value.reason == "oversized"
    assert open_envelope(ENVELOPE, NOTE, keymap(SIGNER), len(ENVELOPE)).payload
    with pytest.raises(EnvelopeError) as info:
        open_envelope(b"garbage" * 100, NOTE, {}, 10)
    assert info.value.reason == "oversized"


def test_envelope_truncated_at_every_length() -> None:
    for n in range(len(ENVELOPE)):
        with pytest.raises(EnvelopeError) as info:
            open_envelope(ENVELOPE[:n], NOTE, keymap(SIGNER), MAX)
        assert info.value.reason == "truncated", n


def test_envelope_trailing_bytes() -> None:
    for extra in (b"\x00", b"x" * 64):
        with pytest.raises(EnvelopeError) as info:
            open_envelope(ENVELOPE + extra, NOTE, keymap(SIGNER), MAX)
        assert info.value.reason == "length_mismatch"


# --- certificates and chain -------------------------------------------------------------------


def test_certificate_payload_is_compact_sorted_json() -> None:
    env = open_envelope(SIGNING, CERT, keymap(ROOT1), MAX)
    body = {
        "v": 1,
        "key": format_public_key(raw(SIGNER)),
        "role": "signing",
        "not_before": NOW - 100,
        "not_after": NOW + 1000,
        "issued": NOW - 100,
        "name": "online 1",
    }
    assert env.payload == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    cert = open_certificate(SIGNING, keymap(ROOT1))
    assert (cert.key, cert.role, cert.name) == (raw(SIGNER), Role.SIGNING, "online 1")
    assert cert.issuer_key_id == key_id(raw(ROOT1))


def test_bundle_with_rotation_opens() -> None:
    trusted, env = open_bundle(BUNDLE, [raw(ROOT0)], NOTE, NOW, MAX)
    assert env.payload == b'{"serial":7}'
    assert trusted.root == raw(ROOT1)
    assert trusted.root_key_id == key_id(raw(ROOT1))
    assert trusted.signing_keys == keymap(SIGNER)
    assert trusted.not_after == {key_id(raw(SIGNER)): NOW + 1000}
    assert trusted.root_not_after == NOW + 10**6
    assert trusted.expires_soonest() == NOW + 1000
    assert [c.role for c in trusted.certificates] == [Role.ROOT, Role.SIGNING]
    assert decode_bundle(BUNDLE, MAX) == ([ROTATION, SIGNING], ENVELOPE)


def test_chain_without_rotation_and_several_pinned_roots() -> None:
    sig = signing_cert(issuer=ROOT0)
    trusted = verify_chain([raw(OTHER), raw(ROOT0)], [sig], NOW)
    assert trusted.root == raw(ROOT0)
    assert trusted.root_not_after is None
    assert trusted.signing_keys == keymap(SIGNER)


def test_signing_key_window_boundaries() -> None:
    sig = signing_cert(not_before=NOW, not_after=NOW + 10)
    assert verify_chain([raw(ROOT1)], [sig], NOW).signing_keys
    assert verify_chain([raw(ROOT1)], [sig], NOW + 9).signing_keys
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT1)], [sig], NOW + 10)
    assert info.value.reason == "expired"
    assert key_id_hex(raw(SIGNER)) in str(info.value)
    assert "Z" in str(info.value)  # ISO 8601 UTC times
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT1)], [sig], NOW - 1)
    assert info.value.reason == "not_yet_valid"


def test_expired_signing_key_in_bundle() -> None:
    bundle = encode_bundle([ROTATION, signing_cert(not_after=NOW)], ENVELOPE)
    with pytest.raises(CertificateError) as info:
        open_default_bundle(bundle)
    assert info.value.reason == "expired"


def test_rotation_window_is_checked() -> None:
    late = rotation_cert(not_before=NOW + 1)
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [late, SIGNING], NOW)
    assert info.value.reason == "not_yet_valid"
    old = rotation_cert(not_after=NOW)
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [old, SIGNING], NOW)
    assert info.value.reason == "expired"


def test_uncertified_signing_key() -> None:
    rogue = generate_key()
    sig = signing_cert(issuer=rogue)
    with pytest.raises(CertificateError) as info:
        open_default_bundle(encode_bundle([ROTATION, sig], ENVELOPE))
    assert info.value.reason == "uncertified_key"
    assert key_id_hex(raw(rogue)) in str(info.value)


def test_old_root_cannot_certify_after_rotation() -> None:
    by_old_root = signing_cert(issuer=ROOT0)
    # Without a rotation the old root is still the pinned root and may certify...
    assert verify_chain([raw(ROOT0)], [by_old_root], NOW).signing_keys
    # ...after a rotation it is retired.
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [ROTATION, by_old_root], NOW)
    assert info.value.reason == "uncertified_key"
    assert "retired" in str(info.value)
    # Nor may it certify another root once replaced.
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [ROTATION, rotation_cert(ROOT0, OTHER), SIGNING], NOW)
    assert info.value.reason == "uncertified_key"


def test_two_rotations_in_a_row() -> None:
    root2 = generate_key()
    chain = [ROTATION, rotation_cert(ROOT1, root2), signing_cert(issuer=root2)]
    trusted = verify_chain([raw(ROOT0)], chain, NOW)
    assert trusted.root == raw(root2)
    with pytest.raises(CertificateError):
        verify_chain([raw(ROOT0)], [*chain[:2], SIGNING], NOW)  # SIGNING is by ROOT1


def test_expired_intermediate_root_does_not_break_the_chain() -> None:
    # Only the root in force must be valid now: a root since replaced may have expired.
    root2 = generate_key()
    expired_r1 = rotation_cert(not_before=NOW - 5000, not_after=NOW - 10)
    chain = [expired_r1, rotation_cert(ROOT1, root2), signing_cert(issuer=root2)]
    assert verify_chain([raw(ROOT0)], chain, NOW).root == raw(root2)
    # The root in force itself must be valid.
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [expired_r1, signing_cert(issuer=ROOT1)], NOW)
    assert info.value.reason == "expired"


def test_wrong_role_positions() -> None:
    # A root rotation after a signing certificate.
    by_root0 = signing_cert(issuer=ROOT0)
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [by_root0, ROTATION], NOW)
    assert info.value.reason == "wrong_role"
    # A root key certified as a signing key by itself.
    self_signing = signing_cert(issuer=ROOT0, subject=ROOT0)
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [self_signing], NOW)
    assert info.value.reason == "wrong_role"
    # Only root certificates: no key may sign the payload.
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [ROTATION], NOW)
    assert info.value.reason == "uncertified_key"
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [], NOW)
    assert info.value.reason == "uncertified_key"
    with pytest.raises(CertificateError) as info:
        issue_certificate(ROOT0, raw(SIGNER), "admin", NOW, NOW + 1)
    assert info.value.reason == "wrong_role"


def test_payload_signed_by_a_root_is_refused() -> None:
    by_root = sign_envelope(ROOT1, NOTE, b"{}")
    with pytest.raises(SignatureError) as info:
        open_default_bundle(encode_bundle([ROTATION, SIGNING], by_root))
    assert info.value.reason == "unknown_key"


def test_certificate_used_as_notification_is_refused() -> None:
    with pytest.raises(EnvelopeError) as info:
        verify_chain([raw(ROOT0)], [ROTATION, ENVELOPE], NOW)
    assert info.value.reason == "wrong_type"


def _signed_cert_payload(body: object) -> bytes:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    return sign_envelope(ROOT0, CERT, text)


GOOD_BODY = {
    "v": 1,
    "key": format_public_key(raw(SIGNER)),
    "role": "signing",
    "not_before": NOW - 1,
    "not_after": NOW + 1,
    "issued": NOW,
    "name": "",
}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe{}",
        b'{"v":1,"v":1}',
        b"[1,2]",
        b"[" * 1500 + b"]" * 1500,  # deeper than the recursion limit
        {**GOOD_BODY, "v": 2},
        {**GOOD_BODY, "v": True},
        {**GOOD_BODY, "not_after": 1.5},
        {**GOOD_BODY, "not_before": True},
        {**GOOD_BODY, "not_after": float("nan")},
        {**GOOD_BODY, "issued": "now"},
        {**GOOD_BODY, "key": "ed25519:AAAA"},
        {**GOOD_BODY, "key": 5},
        {**GOOD_BODY, "name": None},
        {**GOOD_BODY, "role": "admin"},
        {**GOOD_BODY, "not_before": NOW + 1},
        {**GOOD_BODY, "extra": 1},
        {k: v for k, v in GOOD_BODY.items() if k != "issued"},
    ],
)
def test_malformed_certificate_payloads(body: object) -> None:
    with pytest.raises(CertificateError) as info:
        verify_chain([raw(ROOT0)], [_signed_cert_payload(body)], NOW)
    assert info.value.reason == "bad_certificate"


def test_good_handmade_certificate_payload_is_accepted() -> None:
    assert verify_chain([raw(ROOT0)], [_signed_cert_payload(GOOD_BODY)], NOW).signing_keys


def test_chain_and_certificate_bounds() -> None:
    many = [SIGNING] * (MAX_CERTIFICATES + 1)
    with pytest.raises(EnvelopeError) as info:
        verify_chain([raw(ROOT1)], many, NOW)
    assert info.value.reason == "oversized"
    assert verify_chain([raw(ROOT1)], many[:MAX_CERTIFICATES], NOW).signing_keys
    big = sign_envelope(ROOT1, CERT, b" " * MAX_CERTIFICATE_SIZE)
    with pytest.raises(EnvelopeError) as info:
        verify_chain([raw(ROOT1)], [big], NOW)
    assert info.value.reason == "oversized"
    with pytest.raises(CertificateError) as info:
        issue_certificate(ROOT1, raw(SIGNER), "signing", NOW, NOW + 1, "x" * 5000)
    assert info.value.reason == "bad_certificate"
    with pytest.raises(EnvelopeError):
        encode_bundle(many, ENVELOPE)
    with pytest.raises(EnvelopeError):
        encode_bundle([big], ENVELOPE)


# --- bundles ----------------------------------------------------------------------------------


def test_every_byte_and_bit_change_of_a_bundle_is_rejected() -> None:
    reasons: set[str] = set()

    def expect_refusal(changed: bytes) -> None:
        try:
            open_default_bundle(changed)
        except SigningError as exc:
            reasons.add(exc.reason)
        else:
            pytest.fail(f"changed bundle accepted: {changed.hex()}")

    for offset in range(len(BUNDLE)):
        for mask in (0xFF, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
            changed = bytearray(BUNDLE)
            changed[offset] ^= mask
            expect_refusal(bytes(changed))
    assert {"bad_magic", "truncated", "bad_signature", "uncertified_key"} <= reasons


def test_bundle_truncated_at_every_length_and_trailing_bytes() -> None:
    for n in range(len(BUNDLE)):
        with pytest.raises(EnvelopeError) as info:
            open_default_bundle(BUNDLE[:n])
        assert info.value.reason == "truncated", n
    with pytest.raises(EnvelopeError) as info:
        open_default_bundle(BUNDLE + b"\x00")
    assert info.value.reason == "length_mismatch"


def test_bundle_header_errors() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_bundle(BUNDLE, len(BUNDLE) - 1)
    assert info.value.reason == "oversized"
    with pytest.raises(EnvelopeError) as info:
        decode_bundle(b"CSE1" + BUNDLE[4:], MAX)
    assert info.value.reason == "bad_magic"
    with pytest.raises(EnvelopeError) as info:
        decode_bundle(BUNDLE_MAGIC + bytes([MAX_CERTIFICATES + 1]) + BUNDLE[5:], MAX)
    assert info.value.reason == "oversized"
    huge_cert = BUNDLE_MAGIC + b"\x01" + struct.pack(">I", MAX_CERTIFICATE_SIZE + 1)
    with pytest.raises(EnvelopeError) as info:
        decode_bundle(huge_cert + b"\x00" * (MAX_CERTIFICATE_SIZE + 1), MAX)
    assert info.value.reason == "oversized"
    with pytest.raises(EnvelopeError) as info:
        decode_bundle(BUNDLE_MAGIC + b"\x00" + struct.pack(">I", 0xFFFFFFFF), MAX)
    assert info.value.reason == "truncated"
    assert decode_bundle(encode_bundle([], b""), MAX) == ([], b"")


# --- checks -----------------------------------------------------------------------------------


def test_check_fresh_boundary() -> None:
    check_fresh(NOW + 1, NOW)
    with pytest.raises(FreshnessError) as info:
        check_fresh(NOW, NOW)
    assert info.value.reason == "expired"
    assert "2025-06-15T15:06:40Z" in str(info.value)
    with pytest.raises(FreshnessError) as info:
        check_fresh(0, NOW, what="snapshot")
    assert "snapshot" in str(info.value)
    assert "1970-01-01T00:00:00Z" in str(info.value)
    with pytest.raises(FreshnessError):
        check_fresh(-(10**30), NOW)  # absurd times still give a clean message


def test_check_not_rollback_boundary() -> None:
    check_not_rollback(None, 0)
    check_not_rollback(5, 5)  # same serial re-signed with a later expiry
    check_not_rollback(5, 6)
    with pytest.raises(RollbackError) as info:
        check_not_rollback(5, 4)
    assert info.value.reason == "rollback"
    assert "4" in str(info.value) and "5" in str(info.value)


def test_check_validity_window_boundaries() -> None:
    check_validity_window(NOW, NOW + 1, NOW, "key")
    for now, reason in ((NOW - 1, "not_yet_valid"), (NOW + 1, "expired")):
        with pytest.raises(CertificateError) as info:
            check_validity_window(NOW, NOW + 1, now, "key")
        assert info.value.reason == reason


# --- random input only ever raises SigningError -----------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_signing_errors(call: Callable[[], object]) -> None:
    # Any other exception type propagates and fails the test.
    with contextlib.suppress(SigningError):
        call()


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_to_open_envelope(data: bytes) -> None:
    keys = keymap(SIGNER)
    _only_signing_errors(lambda: open_envelope(data, NOTE, keys, 512))
    _only_signing_errors(lambda: open_envelope(MAGIC + data, NOTE, keys, MAX))
    _only_signing_errors(lambda: open_envelope(ENVELOPE[:17] + data, NOTE, keys, MAX))


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_to_open_bundle(data: bytes) -> None:
    _only_signing_errors(lambda: open_default_bundle(data))
    _only_signing_errors(lambda: open_default_bundle(BUNDLE_MAGIC + data))
    _only_signing_errors(lambda: open_default_bundle(BUNDLE[:9] + data))


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(BUNDLE)), st.integers(0, 2), st.binary(max_size=8)),
        min_size=1,
        max_size=4,
    )
)
def test_random_edits_of_a_bundle(edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(BUNDLE)
    for pos, op, chunk in edits:
        pos = min(pos, len(data))
        if op == 0:
            data[pos:pos] = chunk  # insert
        elif op == 1:
            del data[pos : pos + len(chunk) + 1]  # delete
        else:
            data[pos : pos + len(chunk)] = chunk  # overwrite
    if bytes(data) == BUNDLE:
        return
    with pytest.raises(SigningError):
        open_default_bundle(bytes(data))
