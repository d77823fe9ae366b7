"""Key certificates, the trust chain from a pinned root to online signing keys, and bundles.

A key certificate is an envelope of type 1 (key certificate) whose payload is compact UTF-8 JSON
(sorted keys, no spaces)::

    {"issued":<int>,"key":"ed25519:...","name":"<label>","not_after":<int>,
     "not_before":<int>,"role":"signing"|"root","v":1}

The offline root certifies online signing keys (role "signing") for a validity window. A new
root is certified by the root it replaces (role "root"); the window of such a certificate is the
validity of the *new* root.

Chain (``verify_chain``): zero or more root-rotation certificates in order, then one or more
signing certificates. The trusted root starts as the pinned root(s). Each rotation must be signed
by the root currently trusted; the new root then *replaces* the old one. Only the root in force
must be valid now (as in TUF): an ASP that pinned an old root can still follow the chain after an
intermediate root's window ended. A retired
root is no longer trusted to certify anything: once retired its key may be stored less carefully,
leaked or compromised later, and without this rule whoever got it could mint signing keys for
every ASP that still pins it, for ever. Each signing certificate must be signed by the root in
force and be valid now (``not_before <= now < not_after``).

Bundle (one file carrying a chain and one signed envelope; integers big-endian)::

    magic b"CSB1" | u8 certificate count | (u32 length | certificate) * count
                  | u32 length | signed envelope            -- nothing after

At most 16 certificates of at most 4096 bytes each. Every length is bounded before slicing.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signing.checks import check_validity_window
from signing.envelope import (
    Envelope,
    PayloadType,
    open_envelope,
    peek_key_id,
    sign_envelope,
)
from signing.errors import CertificateError, EnvelopeError, KeyFileError, SignatureError
from signing.keys import format_public_key, key_id, parse_public_key
from signing.trust import RootSet, TrustFloor, is_document, verify_trust

CERTIFICATE_VERSION = 1
MAX_CERTIFICATES = 16
MAX_CERTIFICATE_SIZE = 4096
BUNDLE_MAGIC = b"CSB1"

_U32 = struct.Struct(">I")
_FIELDS = frozenset({"v", "key", "role", "not_before", "not_after", "issued", "name"})


class Role(StrEnum):
    SIGNING = "signing"
    ROOT = "root"


@dataclass(frozen=True, slots=True)
class KeyCertificate:
    """The verified content of a key certificate."""

    key: bytes  # raw 32-byte public key of the subject
    role: Role
    not_before: int
    not_after: int
    issued: int
    name: str
    issuer_key_id: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.key)

    def label(self) -> str:
        """Human description for messages: role, key id and name."""
        named = f" ({self.name})" if self.name else ""
        return f"{self.role.value} key {self.key_id.hex()}{named}"


@dataclass(frozen=True)
class TrustedKeys:
    """Outcome of a verified chain at a given time."""

    root: bytes  # raw public key of the root in force
    signing_keys: dict[bytes, bytes]  # key id -> raw public key, valid at the verification time
    not_after: dict[bytes, int]  # key id -> end of that signing key's window (alarm before it)
    root_not_after: int | None = None  # end of the root's window; None for a pinned root
    certificates: tuple[KeyCertificate, ...] = field(default=())  # the chain, in order
    not_before: dict[bytes, int] = field(default_factory=dict)
    # Set when a root-signed key set (signing/trust.py) vouched for the keys; 0 = legacy chain.
    keyset_version: int = 0
    root_version: int = 0
    recover_session: str | None = None
    revoked: frozenset[bytes] = frozenset()

    def check_signer_at(self, kid: bytes, when: int) -> None:
        """CertificateError unless `kid` is a trusted, unrevoked key valid at `when`."""
        if kid in self.revoked:
            raise CertificateError(
                "revoked", f"key {kid.hex()} is revoked by key set {self.keyset_version}"
            )
        if kid not in self.signing_keys:
            raise CertificateError("uncertified_key", f"key {kid.hex()} is not a trusted key")
        check_validity_window(
            self.not_before.get(kid, 0), self.not_after[kid], when, f"signing key {kid.hex()}"
        )

    @property
    def root_key_id(self) -> bytes:
        return key_id(self.root)

    def expires_soonest(self) -> int:
        """Earliest end of validity among the signing keys and the root in force."""
        ends = list(self.not_after.values())
        if self.root_not_after is not None:
            ends.append(self.root_not_after)
        return min(ends)


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; JSON true/false must not pass for a time.
    return isinstance(value, int) and not isinstance(value, bool)


def _encode_payload(
    subject: bytes, role: Role, not_before: int, not_after: int, issued: int, name: str
) -> bytes:
    body = {
        "v": CERTIFICATE_VERSION,
        "key": format_public_key(subject),
        "role": role.value,
        "not_before": not_before,
        "not_after": not_after,
        "issued": issued,
        "name": name,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def issue_certificate(
    issuer_private_key: Ed25519PrivateKey,
    subject_public_raw: bytes,
    role: Role | str,
    not_before: int,
    not_after: int,
    name: str = "",
    *,
    issued: int | None = None,
) -> bytes:
    """Certify `subject_public_raw` for `role` from `not_before` (inclusive) to `not_after`
    (exclusive), signed by `issuer_private_key`. `issued` defaults to the current time."""
    try:
        role = Role(role)
    except ValueError:
        raise CertificateError("wrong_role", f"role {role!r} is not 'signing' or 'root'") from None
    issued = int(time.time()) if issued is None else issued
    if not all(_is_int(t) for t in (not_before, not_after, issued)):
        raise CertificateError("bad_certificate", "certificate times must be integer seconds")
    if not not_before < not_after:
        raise CertificateError(
            "bad_certificate", f"empty window: not_before {not_before} >= not_after {not_after}"
        )
    if not isinstance(name, str):
        raise CertificateError("bad_certificate", "certificate name must be text")
    payload = _encode_payload(bytes(subject_public_raw), role, not_before, not_after, issued, name)
    cert = sign_envelope(issuer_private_key, PayloadType.KEY_CERTIFICATE, payload)
    if len(cert) > MAX_CERTIFICATE_SIZE:
        raise CertificateError(
            "bad_certificate",
            f"certificate would be {len(cert)} bytes, over {MAX_CERTIFICATE_SIZE}; "
            "shorten the name",
        )
    return cert


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicate field could be read differently by another JSON parser: refuse it.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate field {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def strict_json(payload: bytes, where: str) -> Any:
    """Signed JSON, refusing duplicate fields and NaN/Infinity; CertificateError otherwise."""
    try:
        return json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CertificateError("bad_certificate", f"{where} is not valid JSON: {exc}") from None


def parse_certificate_payload(payload: bytes, issuer_key_id: bytes) -> KeyCertificate:
    """Parse the JSON of an already verified certificate; CertificateError on any deviation."""
    where = f"certificate signed by {issuer_key_id.hex()}"
    obj = strict_json(payload, where)
    if not isinstance(obj, dict):
        raise CertificateError("bad_certificate", f"{where} is not a JSON object")
    if set(obj) != _FIELDS:
        # Unknown fields are refused, not ignored: a future field may restrict the key, and a
        # verifier that ignored it would trust the key more than its issuer meant.
        missing = sorted(_FIELDS - set(obj))
        extra = sorted(set(obj) - _FIELDS)
        raise CertificateError(
            "bad_certificate", f"{where} has missing fields {missing} / unknown fields {extra}"
        )
    if not _is_int(obj["v"]) or obj["v"] != CERTIFICATE_VERSION:
        raise CertificateError(
            "bad_certificate", f"{where} has version {obj['v']!r}, expected {CERTIFICATE_VERSION}"
        )
    if not isinstance(obj["key"], str) or not isinstance(obj["name"], str):
        raise CertificateError("bad_certificate", f"{where}: key and name must be strings")
    try:
        subject = parse_public_key(obj["key"])
    except KeyFileError as exc:
        raise CertificateError("bad_certificate", f"{where}: {exc.message}") from None
    try:
        role = Role(obj["role"])
    except ValueError:
        raise CertificateError(
            "bad_certificate", f"{where} has unknown role {obj['role']!r}"
        ) from None
    times = (obj["not_before"], obj["not_after"], obj["issued"])
    if not all(_is_int(t) for t in times):
        raise CertificateError("bad_certificate", f"{where}: times must be integer seconds")
    if not obj["not_before"] < obj["not_after"]:
        raise CertificateError("bad_certificate", f"{where} has an empty validity window")
    return KeyCertificate(
        key=subject,
        role=role,
        not_before=obj["not_before"],
        not_after=obj["not_after"],
        issued=obj["issued"],
        name=obj["name"],
        issuer_key_id=issuer_key_id,
    )


def open_certificate(data: bytes, issuers: Mapping[bytes, bytes]) -> KeyCertificate:
    """Verify one certificate against `issuers` (key id -> raw) and parse it. No time check."""
    env = open_envelope(data, PayloadType.KEY_CERTIFICATE, issuers, MAX_CERTIFICATE_SIZE)
    return parse_certificate_payload(env.payload, env.key_id)


def verify_chain(
    pinned_roots: Iterable[bytes], certificates: Sequence[bytes], now: int | None
) -> TrustedKeys:
    """Walk root rotations then signing certificates from the pinned root(s); see module doc.
    `now` None skips the windows: the caller checks them at a signed time."""
    roots: dict[bytes, bytes] = {key_id(raw): bytes(raw) for raw in pinned_roots}
    if len(certificates) > MAX_CERTIFICATES:
        raise EnvelopeError(
            "oversized",
            f"chain holds {len(certificates)} certificates; at most {MAX_CERTIFICATES}",
        )
    retired: dict[bytes, bytes] = {}  # retired root id -> id of the root that replaced it
    signing_keys: dict[bytes, bytes] = {}
    not_after: dict[bytes, int] = {}
    not_before: dict[bytes, int] = {}
    root_not_after: int | None = None
    chain: list[KeyCertificate] = []
    pending_root: tuple[KeyCertificate, str] | None = None
    for index, blob in enumerate(certificates):
        position = f"certificate {index + 1} of {len(certificates)}"
        try:
            env = open_envelope(blob, PayloadType.KEY_CERTIFICATE, roots, MAX_CERTIFICATE_SIZE)
        except SignatureError as exc:
            if exc.reason != "unknown_key":
                raise
            signer = peek_key_id(blob)  # structure was already checked by open_envelope
            trusted = ", ".join(k.hex() for k in roots) or "none"
            detail = (
                f"; it is a retired root, replaced by {retired[signer].hex()}"
                if signer in retired
                else ""
            )
            raise CertificateError(
                "uncertified_key",
                f"{position} is signed by key {signer.hex()}, which is not a trusted root "
                f"(trusted: {trusted}){detail}",
            ) from None
        cert = parse_certificate_payload(env.payload, env.key_id)
        what = f"{position}: {cert.label()}"
        if cert.role is Role.ROOT:
            if signing_keys:
                raise CertificateError(
                    "wrong_role",
                    f"{what} comes after a signing certificate; root rotations must come first",
                )
            # Only the root in force must be valid now (checked below, as TUF does): a root that
            # was since replaced may have expired without breaking the chain through it.
            pending_root = (cert, what)
            for old in roots:
                retired[old] = cert.key_id
            roots = {cert.key_id: cert.key}
            root_not_after = cert.not_after
        else:
            if cert.key_id in roots:
                # An online key that is also the root would make the offline root pointless.
                raise CertificateError("wrong_role", f"{what} is the root key itself")
            if pending_root is not None:
                root_cert, root_what = pending_root
                if now is not None:
                    check_validity_window(root_cert.not_before, root_cert.not_after, now, root_what)
                pending_root = None
            if now is not None:
                check_validity_window(cert.not_before, cert.not_after, now, what)
            # With several pinned roots, the first signing certificate fixes the root in force.
            roots = {env.key_id: roots[env.key_id]}
            signing_keys[cert.key_id] = cert.key
            not_after[cert.key_id] = max(cert.not_after, not_after.get(cert.key_id, 0))
            not_before[cert.key_id] = min(cert.not_before, not_before.get(cert.key_id, 2**63))
        chain.append(cert)
    if not signing_keys:
        raise CertificateError(
            "uncertified_key", "the chain holds no signing certificate: no key may sign"
        )
    ((_, root),) = roots.items()
    return TrustedKeys(
        root=root,
        signing_keys=signing_keys,
        not_after=not_after,
        root_not_after=root_not_after,
        certificates=tuple(chain),
        not_before=not_before,
    )


def encode_bundle(certs: Sequence[bytes], signed: bytes) -> bytes:
    """Pack a chain and one signed envelope into a bundle (see module doc)."""
    if len(certs) > MAX_CERTIFICATES:
        raise EnvelopeError(
            "oversized", f"{len(certs)} certificates; a bundle holds at most {MAX_CERTIFICATES}"
        )
    parts = [BUNDLE_MAGIC, bytes([len(certs)])]
    for index, cert in enumerate(certs):
        if len(cert) > MAX_CERTIFICATE_SIZE:
            raise EnvelopeError(
                "oversized",
                f"certificate {index + 1} is {len(cert)} bytes; at most {MAX_CERTIFICATE_SIZE}",
            )
        parts += [_U32.pack(len(cert)), bytes(cert)]
    if len(signed) > 0xFFFFFFFF:
        raise EnvelopeError("oversized", f"signed envelope of {len(signed)} bytes exceeds u32")
    parts += [_U32.pack(len(signed)), bytes(signed)]
    return b"".join(parts)


def _take(data: bytes, offset: int, size: int, what: str) -> tuple[bytes, int]:
    if size > len(data) - offset:
        raise EnvelopeError(
            "truncated",
            f"bundle ends inside {what}: needs {size} bytes at offset {offset}, "
            f"{len(data) - offset} left",
        )
    return data[offset : offset + size], offset + size


def _take_u32(data: bytes, offset: int, what: str) -> tuple[int, int]:
    raw, offset = _take(data, offset, 4, f"the length of {what}")
    return _U32.unpack(raw)[0], offset


def decode_bundle(data: bytes, max_size: int) -> tuple[list[bytes], bytes]:
    """Split a bundle into its certificates and signed envelope. Verifies nothing."""
    if len(data) > max_size:
        raise EnvelopeError(
            "oversized", f"bundle is {len(data)} bytes, larger than the {max_size} allowed"
        )
    data = bytes(data)
    if len(data) < len(BUNDLE_MAGIC) + 1:
        raise EnvelopeError("truncated", f"bundle is only {len(data)} bytes")
    if data[:4] != BUNDLE_MAGIC:
        raise EnvelopeError("bad_magic", f"bundle magic is {data[:4]!r}, expected {BUNDLE_MAGIC!r}")
    count = data[4]
    if count > MAX_CERTIFICATES:
        raise EnvelopeError(
            "oversized", f"bundle declares {count} certificates; at most {MAX_CERTIFICATES}"
        )
    offset = 5
    certs: list[bytes] = []
    for index in range(count):
        what = f"certificate {index + 1}"
        length, offset = _take_u32(data, offset, what)
        if length > MAX_CERTIFICATE_SIZE:
            raise EnvelopeError(
                "oversized", f"{what} declares {length} bytes; at most {MAX_CERTIFICATE_SIZE}"
            )
        cert, offset = _take(data, offset, length, what)
        certs.append(cert)
    length, offset = _take_u32(data, offset, "the signed envelope")
    signed, offset = _take(data, offset, length, "the signed envelope")
    if offset != len(data):
        raise EnvelopeError(
            "length_mismatch", f"bundle has {len(data) - offset} trailing bytes after its end"
        )
    return certs, signed


def verify_keys(
    pinned_roots: Iterable[bytes],
    certs: Sequence[bytes],
    now: int | None,
    *,
    threshold: int = 1,
    floor: TrustFloor | None = None,
) -> TrustedKeys:
    """The keys a bundle's slots vouch for: root-signed documents (signing/trust.py) or, until
    an ASP has seen a key set, a legacy certificate chain. Key windows are checked by the
    caller (`TrustedKeys.check_signer_at`) for documents; by `verify_chain` for a chain."""
    if any(is_document(c) for c in certs):
        roots = tuple(bytes(r) for r in pinned_roots)
        trust = verify_trust(RootSet(roots, threshold), certs, floor)
        keyset = trust.keyset
        return TrustedKeys(
            root=trust.roots.keys[0],
            signing_keys=trust.signing_keys,
            not_after=trust.not_after,
            not_before=trust.not_before,
            keyset_version=keyset.version,
            root_version=trust.root_version,
            recover_session=keyset.recover_session,
            revoked=keyset.revoked,
        )
    if floor is not None and floor.keyset_version > 0:
        raise CertificateError(
            "superseded",
            f"the notification carries a bare certificate chain, but key set "
            f"{floor.keyset_version} has been seen: only a key set can vouch for keys now",
        )
    return verify_chain(pinned_roots, certs, now)


def open_bundle(
    data: bytes,
    pinned_roots: Iterable[bytes],
    expected_type: PayloadType,
    now: int | None,
    max_size: int,
    *,
    threshold: int = 1,
    floor: TrustFloor | None = None,
) -> tuple[TrustedKeys, Envelope]:
    """Decode a bundle, verify its trust documents, then its envelope with the keys they vouch
    for. The payload is returned unparsed; the caller checks its own expiry.

    The bundle's slots hold either a legacy certificate chain or root-signed documents
    (signing/trust.py). Once an ASP has seen a key set (`floor.keyset_version` > 0) a legacy
    chain is refused: it cannot say that a key was renewed or revoked. `now` None verifies the
    signatures only; the caller then checks the signer's window at a signed time with
    `TrustedKeys.check_signer_at`.
    """
    certs, signed = decode_bundle(data, max_size)
    trusted = verify_keys(pinned_roots, certs, now, threshold=threshold, floor=floor)
    kid = peek_key_id(signed, max_size)
    if trusted.keyset_version or kid in trusted.signing_keys:
        if now is not None:
            trusted.check_signer_at(kid, now)
        elif kid in trusted.revoked or kid not in trusted.signing_keys:
            trusted.check_signer_at(kid, 0)
    return trusted, open_envelope(signed, expected_type, trusted.signing_keys, max_size)
