"""Signed envelope: exact bytes, one Ed25519 signature, verified before the payload is looked at.

Format (all integers big-endian)::

    offset  size  field
    0       4     magic b"CSE1"
    4       1     payload type (u8): 1 = key certificate, 2 = notification; others reserved
    5       8     signer key id (first 8 bytes of SHA-256 of the signer's raw public key)
    13      4     payload length L (u32)
    17      L     payload bytes
    17+L    64    Ed25519 signature over bytes [0, 17+L)

The signature covers the header too, so the type and key id cannot be swapped without detection,
and a certificate can never be replayed as a notification. ``open_envelope`` checks, in order:
total size against the caller's bound, minimum length, magic, type, exact length, key id, then
the signature; only then does it hand out the payload. It never parses the payload.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signing.errors import EnvelopeError, KeyFileError, SignatureError
from signing.keys import key_id, public_key_raw

MAGIC = b"CSE1"
HEADER_SIZE = 17
SIGNATURE_SIZE = 64
MIN_ENVELOPE_SIZE = HEADER_SIZE + SIGNATURE_SIZE
MAX_PAYLOAD_SIZE = 0xFFFFFFFF

_HEADER = struct.Struct(">4sB8sI")


class PayloadType(IntEnum):
    KEY_CERTIFICATE = 1
    NOTIFICATION = 2


_KNOWN_TYPES = frozenset(int(t) for t in PayloadType)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: the payload is authentic for `key_id`, and nothing more is implied."""

    type: PayloadType
    key_id: bytes
    payload: bytes

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()


def _type_name(value: int) -> str:
    try:
        return PayloadType(value).name.lower()
    except ValueError:
        return f"reserved type {value}"


def sign_envelope(private_key: Ed25519PrivateKey, payload_type: int, payload: bytes) -> bytes:
    """Wrap `payload` in an envelope signed by `private_key`."""
    try:
        ptype = PayloadType(payload_type)
    except ValueError:
        raise EnvelopeError("wrong_type", f"payload type {payload_type!r} is reserved") from None
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise EnvelopeError(
            "oversized", f"payload of {len(payload)} bytes exceeds the u32 length field"
        )
    signed = _HEADER.pack(MAGIC, ptype, key_id(public_key_raw(private_key)), len(payload)) + payload
    return signed + private_key.sign(signed)


def _check_structure(data: bytes, max_size: int | None) -> tuple[int, bytes, int]:
    """Size, magic and length checks shared by `open_envelope` and `peek_key_id`."""
    if max_size is not None and len(data) > max_size:
        raise EnvelopeError(
            "oversized", f"envelope is {len(data)} bytes, larger than the {max_size} allowed"
        )
    if len(data) < MIN_ENVELOPE_SIZE:
        raise EnvelopeError(
            "truncated",
            f"envelope is {len(data)} bytes, shorter than the minimum {MIN_ENVELOPE_SIZE}",
        )
    magic, ptype, kid, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EnvelopeError("bad_magic", f"envelope magic is {magic!r}, expected {MAGIC!r}")
    expected = HEADER_SIZE + length + SIGNATURE_SIZE
    if expected > len(data):
        raise EnvelopeError(
            "truncated",
            f"envelope declares a {length}-byte payload ({expected} bytes in all) but holds "
            f"{len(data)} bytes",
        )
    if expected < len(data):
        raise EnvelopeError(
            "length_mismatch",
            f"envelope declares a {length}-byte payload ({expected} bytes in all) but holds "
            f"{len(data)} bytes (trailing data)",
        )
    return ptype, kid, length


def peek_key_id(data: bytes, max_size: int | None = None) -> bytes:
    """Signer key id of a structurally valid envelope, to choose a key. Proves nothing."""
    _, kid, _ = _check_structure(bytes(data), max_size)
    return kid


def open_envelope(
    data: bytes,
    expected_type: PayloadType,
    keys: Mapping[bytes, bytes],
    max_size: int,
) -> Envelope:
    """Verify an envelope against `keys` (key id -> raw public key) and return its payload.

    Raises EnvelopeError for malformed bytes, SignatureError for an unknown signer or a bad
    signature. `max_size` is checked first, before the bytes are copied or looked at.
    """
    if len(data) > max_size:
        raise EnvelopeError(
            "oversized", f"envelope is {len(data)} bytes, larger than the {max_size} allowed"
        )
    data = bytes(data)
    ptype, kid, length = _check_structure(data, max_size)
    if ptype not in _KNOWN_TYPES:
        raise EnvelopeError("wrong_type", f"envelope has {_type_name(ptype)}")
    if ptype != expected_type:
        raise EnvelopeError(
            "wrong_type",
            f"envelope holds a {_type_name(ptype)}, expected a {_type_name(expected_type)}",
        )
    raw = keys.get(kid)
    if raw is None:
        raise SignatureError(
            "unknown_key", f"envelope is signed by key {kid.hex()}, which is not a trusted key"
        )
    end = HEADER_SIZE + length
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFileError(
            "bad_public_key", f"trusted key {kid.hex()} is not a valid Ed25519 public key"
        ) from None
    try:
        public.verify(data[end:], data[:end])
    except InvalidSignature:
        raise SignatureError(
            "bad_signature", f"signature by key {kid.hex()} does not verify"
        ) from None
    return Envelope(type=PayloadType(ptype), key_id=kid, payload=data[HEADER_SIZE:end])
