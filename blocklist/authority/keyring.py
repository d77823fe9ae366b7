"""The authority's keys on disk: the key ceremony, the online signing key and its chain.

Files in the keys directory:
  root.key     the root private key (0600). Production: move it offline after the ceremony and
               bring it back only to certify a new signing key or a new root.
  root.pub     the root public key, in the `ed25519:…` form ASPs pin.
  signing.key  the online signing key (0600) the service signs notifications with.
  chain.txt    the certificate chain for it, one base64 certificate per line: root rotations
               in order, then the signing certificate.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signing import (
    Role,
    TrustedKeys,
    format_public_key,
    generate_key,
    issue_certificate,
    key_id,
    load_private_key,
    load_public_key,
    open_certificate,
    public_key_raw,
    save_private_key,
    save_public_key,
    verify_chain,
)

DAY = 86400


@dataclass
class Signer:
    key: Ed25519PrivateKey
    chain: list[bytes]
    root: bytes  # the root public key in force

    def verify(self, now: int) -> TrustedKeys:
        return verify_chain([self.root], self.chain, now)


def _write_chain(keys_dir: Path, chain: list[bytes]) -> None:
    tmp = keys_dir / "chain.txt.tmp"
    tmp.write_text("".join(base64.b64encode(c).decode() + "\n" for c in chain))
    os.replace(tmp, keys_dir / "chain.txt")


def read_chain(keys_dir: Path) -> list[bytes]:
    lines = (keys_dir / "chain.txt").read_text().split()
    return [base64.b64decode(line, validate=True) for line in lines]


def ceremony(keys_dir: Path, now: int, signing_days: int = 90) -> str:
    """Create a root key and a first signing key; return the root public key to pin."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    root, signer = generate_key(), generate_key()
    save_private_key(keys_dir / "root.key", root)
    save_public_key(keys_dir / "root.pub", public_key_raw(root))
    save_private_key(keys_dir / "signing.key", signer)
    cert = issue_certificate(
        root, public_key_raw(signer), Role.SIGNING, now - 300, now + signing_days * DAY, "signing-1"
    )
    _write_chain(keys_dir, [cert])
    return format_public_key(public_key_raw(root))


def load_signer(keys_dir: Path) -> Signer:
    key = load_private_key(keys_dir / "signing.key")
    chain = read_chain(keys_dir)
    root = load_public_key(keys_dir / "root.pub")
    return Signer(key, chain, root)


def _rotation_certs(chain: list[bytes], pinned: bytes) -> list[bytes]:
    out = []
    issuers = {key_id(pinned): pinned}
    for blob in chain:
        cert = open_certificate(blob, issuers)
        if cert.role is not Role.ROOT:
            break
        out.append(blob)
        issuers = {cert.key_id: cert.key}
    return out


def new_signing_key(
    keys_dir: Path, root_key_path: Path, now: int, days: int = 90, pinned_root: bytes | None = None
) -> Signer:
    """Certify a fresh online signing key with the root (brought online for this)."""
    root = load_private_key(root_key_path)
    chain = read_chain(keys_dir)
    pinned = pinned_root or load_public_key(keys_dir / "root.pub")
    rotations = _rotation_certs(chain, pinned) if chain else []
    signer = generate_key()
    label = f"signing-{now}"
    cert = issue_certificate(
        root, public_key_raw(signer), Role.SIGNING, now - 300, now + days * DAY, label
    )
    save_private_key(keys_dir / "signing.key", signer, overwrite=True)
    _write_chain(keys_dir, [*rotations, cert])
    return load_signer(keys_dir)
