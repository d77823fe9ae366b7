"""The authority's keys on disk: the key ceremony, the online signing key and the key set.

Files in the keys directory:
  root.key | root-<i>.key  the root private key(s) (0600): one, or n of which k must sign
               (k of n). Production: each held by a different person, offline; brought back
               only to sign a key set (renew, revoke) or a root rotation.
  root.json    the root set in force (version, threshold, public keys), for people and tools;
               ASPs pin its keys and threshold in their config.
  root.pub     the first root public key (what an ASP with one pinned root pins).
  signing.key  the online signing key (0600) the service signs notifications with.
  chain.txt    the trust documents carried in every notification, one base64 document per line:
               root document 1 (the ceremony's set), the rotations since in order, then the
               current key set
               (signing/trust.py). A directory made before key sets existed holds a legacy
               certificate chain; the next renewal replaces it with key set 1.

Every change signs the next key-set version: `renew` (a fresh signing key; the old one is left
out, so ASPs that have seen the new set refuse it), `revoke` (keys listed as revoked, a fresh
signing key when the current one is among them, and optionally a recovery session after a
theft), `rotate_root` (the old roots certify a new root set, which then signs the key set).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blocklist.files import write_atomic
from signing import (
    CertificateError,
    TrustedKeys,
    format_public_key,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    parse_public_key,
    public_key_raw,
    save_private_key,
    save_public_key,
    verify_keys,
)
from signing.trust import (
    DocType,
    RootSet,
    SetKey,
    is_document,
    keyset_payload,
    open_document,
    parse_keyset,
    parse_root,
    root_payload,
    sign_document,
)

DAY = 86400
ROOT_FILE = "root.json"


@dataclass
class Signer:
    key: Ed25519PrivateKey
    chain: list[bytes]
    root: bytes  # a root public key in force (the publisher checks each notification with it)

    def verify(self, now: int) -> TrustedKeys:
        trusted = verify_keys([self.root], self.chain, now)
        trusted.check_signer_at(key_id(public_key_raw(self.key)), now)
        return trusted

    @property
    def recover_session(self) -> str | None:
        return verify_keys([self.root], self.chain, None).recover_session


def _write_chain(keys_dir: Path, chain: list[bytes]) -> None:
    data = "".join(base64.b64encode(c).decode() + "\n" for c in chain).encode()
    write_atomic(keys_dir / "chain.txt", data, mode=0o644)


def read_chain(keys_dir: Path) -> list[bytes]:
    lines = (keys_dir / "chain.txt").read_text().split()
    return [base64.b64decode(line, validate=True) for line in lines]


def read_roots(keys_dir: Path) -> RootSet:
    """The root set in force (root.json; root.pub alone for a directory made before it)."""
    path = keys_dir / ROOT_FILE
    if not path.exists():
        return RootSet((load_public_key(keys_dir / "root.pub"),), 1, 1)
    obj = json.loads(path.read_text())
    keys = tuple(parse_public_key(k) for k in obj["keys"])
    return RootSet(keys, int(obj["threshold"]), int(obj["version"]))


def _write_roots(keys_dir: Path, roots: RootSet) -> None:
    body = {
        "version": roots.version,
        "threshold": roots.threshold,
        "keys": [format_public_key(k) for k in roots.keys],
    }
    write_atomic(keys_dir / ROOT_FILE, (json.dumps(body, indent=2) + "\n").encode(), mode=0o644)
    save_public_key(keys_dir / "root.pub", roots.keys[0], overwrite=True)


def _root_key_names(count: int, version: int) -> list[str]:
    if count == 1 and version == 1:
        return ["root.key"]
    prefix = "root" if version == 1 else f"root-v{version}"
    return [f"{prefix}-{i + 1}.key" for i in range(count)]


def ceremony(
    keys_dir: Path, now: int, signing_days: int = 90, *, roots: int = 1, threshold: int = 1
) -> str:
    """Create `roots` root keys (any `threshold` of them sign), a first signing key and key set
    1; return the root public key(s) to pin, one per line."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    privs = [generate_key() for _ in range(roots)]
    root_set = RootSet(tuple(public_key_raw(k) for k in privs), threshold, 1)
    # Root document 1, signed by every root at the ceremony: it tells anyone who pins one of
    # the roots (the publisher's own check, a careless ASP) the whole set and its threshold.
    root_doc = sign_document(privs, DocType.ROOT, root_payload(root_set.keys, threshold, 1, now))
    for name, key in zip(_root_key_names(roots, 1), privs, strict=True):
        save_private_key(keys_dir / name, key)
    _write_roots(keys_dir, root_set)
    signer = generate_key()
    save_private_key(keys_dir / "signing.key", signer)
    keyset = _keyset_doc(
        privs[:threshold], 1, 1, now, [_set_key(signer, now, signing_days)], (), None
    )
    _write_chain(keys_dir, [root_doc, keyset])
    return "\n".join(format_public_key(k) for k in root_set.keys)


def load_signer(keys_dir: Path) -> Signer:
    key = load_private_key(keys_dir / "signing.key")
    chain = read_chain(keys_dir)
    return Signer(key, chain, read_roots(keys_dir).keys[0])


def _set_key(key: Ed25519PrivateKey, now: int, days: int) -> SetKey:
    return SetKey(public_key_raw(key), f"signing-{now}", now - 300, now + days * DAY)


def _keyset_doc(
    root_keys: Sequence[Ed25519PrivateKey],
    version: int,
    root_version: int,
    now: int,
    keys: Sequence[SetKey],
    revoked: Sequence[bytes],
    recover_session: str | None,
) -> bytes:
    payload = keyset_payload(
        version=version,
        root_version=root_version,
        issued=now,
        keys=keys,
        revoked=revoked,
        recover_session=recover_session,
    )
    return sign_document(list(root_keys), DocType.KEY_SET, payload)


def _load_roots(paths: Sequence[Path], roots: RootSet) -> list[Ed25519PrivateKey]:
    """The root private keys given, checked to be distinct members of `roots`, at least k."""
    keys = [load_private_key(p) for p in paths]
    ids = {key_id(public_key_raw(k)): p for k, p in zip(keys, paths, strict=True)}
    strangers = [str(p) for kid, p in ids.items() if kid not in roots.ids]
    if strangers:
        raise CertificateError(
            "uncertified_key",
            f"not a root key in force (root version {roots.version}): " + ", ".join(strangers),
        )
    if len(ids) < roots.threshold:
        raise CertificateError(
            "uncertified_key",
            f"{len(ids)} distinct root key(s) given; root version {roots.version} needs "
            f"{roots.threshold}",
        )
    return keys


@dataclass(frozen=True)
class KeyState:
    rotations: list[bytes]
    version: int
    root_version: int
    keys: tuple[SetKey, ...]
    revoked: frozenset[bytes]
    recover_session: str | None


def key_state(keys_dir: Path) -> KeyState:
    """The current key set (or a legacy chain read as key set 0), verified against the roots."""
    chain = read_chain(keys_dir)
    roots = read_roots(keys_dir)
    if not chain or not is_document(chain[-1]):
        return KeyState([], 0, roots.version or 1, (), frozenset(), None)
    payload, signers = open_document(
        chain[-1], DocType.KEY_SET, roots.ids, roots.threshold, "key set in chain.txt"
    )
    keyset = parse_keyset(payload, "key set in chain.txt", signers)
    return KeyState(
        chain[:-1],
        keyset.version,
        keyset.root_version,
        keyset.keys,
        keyset.revoked,
        keyset.recover_session,
    )


def _next_keyset(
    keys_dir: Path,
    root_paths: Sequence[Path],
    now: int,
    keys: Sequence[SetKey],
    revoked: frozenset[bytes],
    recover_session: str | None,
    signing_key: Ed25519PrivateKey | None,
) -> Signer:
    state = key_state(keys_dir)
    roots = read_roots(keys_dir)
    privs = _load_roots(root_paths, roots)
    doc = _keyset_doc(
        privs, state.version + 1, roots.version or 1, now, keys, sorted(revoked), recover_session
    )
    if signing_key is not None:
        save_private_key(keys_dir / "signing.key", signing_key, overwrite=True)
    _write_chain(keys_dir, [*state.rotations, doc])
    return load_signer(keys_dir)


def new_signing_key(
    keys_dir: Path,
    root_key_path: Path | Sequence[Path],
    now: int,
    days: int = 90,
    pinned_root: bytes | None = None,
) -> Signer:
    """`keys renew`: certify a fresh online signing key in the next key set. The old key is
    left out: an ASP that has seen the new set refuses anything it signs."""
    del pinned_root  # the root set in force is read from root.json
    paths = [root_key_path] if isinstance(root_key_path, Path) else list(root_key_path)
    state = key_state(keys_dir)
    signer = generate_key()
    return _next_keyset(
        keys_dir, paths, now, [_set_key(signer, now, days)], state.revoked, None, signer
    )


@dataclass(frozen=True)
class Revocation:
    signer: Signer
    keyset_version: int
    revoked: list[str]
    recover_session: str | None


def revoke(
    keys_dir: Path,
    root_key_paths: Sequence[Path],
    key_ids: Sequence[str],
    now: int,
    *,
    days: int = 90,
    recover: bool = False,
) -> Revocation:
    """`keys revoke`: list `key_ids` (hex) as revoked in the next key set. When the online key
    is among them a fresh one replaces it. `recover` (after a theft) names a new session the
    authority publishes in from now on; ASPs take it whatever serial the thief made them
    record, with no file deleted anywhere."""
    ids = set()
    for text in key_ids:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 8:
            raise CertificateError("bad_certificate", f"{text!r} is not a 16-hex-digit key id")
        ids.add(raw)
    state = key_state(keys_dir)
    current = load_private_key(keys_dir / "signing.key")
    keys = [k for k in state.keys if k.key_id not in ids]
    signing_key = None
    if key_id(public_key_raw(current)) in ids or not keys:
        signing_key = generate_key()
        keys = [k for k in keys if k.key_id != key_id(public_key_raw(current))]
        keys.append(_set_key(signing_key, now, days))
    session = str(uuid.uuid4()) if recover else state.recover_session
    signer = _next_keyset(
        keys_dir, root_key_paths, now, keys, state.revoked | ids, session, signing_key
    )
    return Revocation(signer, state.version + 1, sorted(k.hex() for k in ids), session)


def rotate_root(
    keys_dir: Path,
    old_root_paths: Sequence[Path],
    now: int,
    *,
    roots: int = 1,
    threshold: int = 1,
) -> list[str]:
    """`keys rotate-root`: a new root set of `roots` keys (k = `threshold`), certified by a
    threshold of the old roots and by its own keys; the key set is re-signed by the new roots.
    Returns the new root public keys (ASPs installed from now on pin these)."""
    old = read_roots(keys_dir)
    old_privs = _load_roots(old_root_paths, old)
    version = (old.version or 1) + 1
    privs = [generate_key() for _ in range(roots)]
    new = RootSet(tuple(public_key_raw(k) for k in privs), threshold, version)
    payload = root_payload(new.keys, threshold, version, now)
    doc = sign_document([*old_privs, *privs], DocType.ROOT, payload)
    parse_root(payload, "new root document")
    state = key_state(keys_dir)
    names = _root_key_names(roots, version)
    for name, key in zip(names, privs, strict=True):
        save_private_key(keys_dir / name, key)
    current = load_private_key(keys_dir / "signing.key")
    keys = list(state.keys) or [_set_key(current, now, 90)]
    keyset = _keyset_doc(
        privs[:threshold],
        state.version + 1,
        version,
        now,
        keys,
        sorted(state.revoked),
        state.recover_session,
    )
    _write_chain(keys_dir, [*state.rotations, doc, keyset])
    _write_roots(keys_dir, new)
    return [format_public_key(k) for k in new.keys]
