"""Throw-away TLS certificates for servers on loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signing.selfsigned import write_self_signed


def self_signed(directory: Path, name: str) -> tuple[Path, Path, str]:
    """A self-signed certificate for `name`, 127.0.0.1 and ::1: (cert file, key file, SHA-256
    of the certificate's DER form, as a pin)."""
    cert_path, key_path = write_self_signed(directory, name, days=1)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert_path, key_path, hashlib.sha256(der).hexdigest()
