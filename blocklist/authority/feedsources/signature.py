"""Detached minisign signatures (Ed25519), verified with `cryptography`.

Formats (https://jedisct1.github.io/minisign/): a public key is base64 of "Ed" | key id (8) |
Ed25519 key (32). A signature file has an untrusted comment line, base64 of algorithm ("Ed":
the file itself is signed; "ED": its BLAKE2b-512 is) | key id (8) | signature (64), a
"trusted comment: …" line and base64 of the global signature over signature || comment.
Both signatures must hold; the key ids must match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_SIGNATURE_BYTES = 4096


class SignatureRefused(ValueError):
    pass


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRefused(f"{what} is not base64") from None


def parse_public_key(text: str) -> tuple[bytes, Ed25519PublicKey]:
    """A minisign public key: the base64 line, or the whole .pub file."""
    lines = [ln for ln in text.strip().splitlines() if ln and not ln.startswith("untrusted")]
    raw = _b64(lines[-1] if lines else "", "the public key")
    if len(raw) != 42 or raw[:2] != b"Ed":
        raise SignatureRefused("not a minisign Ed25519 public key")
    return raw[2:10], Ed25519PublicKey.from_public_bytes(raw[10:])


def verify(data: bytes, signature: bytes, public_key: str) -> str:
    """Check `signature` (a .minisig file) over `data`; returns the trusted comment."""
    key_id, key = parse_public_key(public_key)
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureRefused("the signature file is too large")
    try:
        lines = signature.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise SignatureRefused("the signature file is not text") from None
    if len(lines) < 4 or not lines[2].startswith("trusted comment: "):
        raise SignatureRefused("not a minisign signature file")
    sig = _b64(lines[1], "the signature")
    if len(sig) != 74 or sig[:2] not in (b"Ed", b"ED"):
        raise SignatureRefused("unknown signature algorithm")
    if sig[2:10] != key_id:
        raise SignatureRefused(
            f"signed by key {sig[2:10][::-1].hex().upper()}, the feed pins "
            f"{key_id[::-1].hex().upper()}"
        )
    message = hashlib.blake2b(data).digest() if sig[:2] == b"ED" else data
    comment = lines[2][len("trusted comment: ") :]
    global_sig = _b64(lines[3], "the global signature")
    try:
        key.verify(sig[10:], message)
        key.verify(global_sig, sig[10:] + comment.encode())
    except InvalidSignature:
        raise SignatureRefused("bad signature: the file is not what the key signed") from None
    return comment
