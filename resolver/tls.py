"""TLS for the DoT and DoH listeners: the server context, and a throw-away certificate.

`server_context` loads the configured certificate and key with errors that name the key and
the file, offers ALPN ("dot" for DNS over TLS, "h2"/"http/1.1" for DNS over HTTPS), asks TLS 1.2
at least, and counts (or, with `require_sni`, refuses) clients that name no server.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOT_ALPN = ["dot"]
DOH_ALPN = ["h2", "http/1.1"]


class TlsSettings(Protocol):
    certificate: Path | None
    private_key: Path | None
    require_sni: bool
    min_version: str


def _read(path: Path | None, key: str) -> bytes:
    if path is None:
        raise ValueError(f"tls.{key}: not set")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"tls.{key}: {path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"tls.{key}: {path}: cannot read: {exc.strerror}") from None


def load_certificate(path: Path | None) -> x509.Certificate:
    """The server's certificate (the first of the chain), or ValueError naming the file."""
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"tls.certificate: {path}: not a PEM certificate") from None


def server_context(
    tls: TlsSettings, alpn: list[str], on_no_sni: Callable[[], None] | None = None
) -> ssl.SSLContext:
    """A server context for `tls`; ValueError names the key and file of what is wrong."""
    load_certificate(tls.certificate)
    key = _read(tls.private_key, "private_key")
    if b"PRIVATE KEY-----" not in key:
        raise ValueError(f"tls.private_key: {tls.private_key}: not a PEM private key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    try:
        ctx.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except ssl.SSLError as exc:
        raise ValueError(
            f"tls.private_key: {tls.private_key} does not match tls.certificate "
            f"{tls.certificate} ({exc.reason or exc})"
        ) from None
    ctx.set_alpn_protocols(alpn)
    ctx.options |= ssl.OP_NO_COMPRESSION  # CRIME; DNS answers are small anyway
    require = tls.require_sni

    def sni(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> int | None:
        if name is not None:
            return None
        if on_no_sni is not None:
            on_no_sni()
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME if require else None

    ctx.sni_callback = sni  # type: ignore[assignment]
    return ctx


def expiry(path: Path | None) -> float:
    """When the certificate stops being valid (Unix time); 0 when it cannot be read."""
    try:
        return load_certificate(path).not_valid_after_utc.timestamp()
    except ValueError:
        return 0.0


def write_self_signed(
    directory: Path, name: str, addresses: tuple[str, ...] = ("127.0.0.1", "::1"), days: int = 30
) -> tuple[Path, Path]:
    """A self-signed certificate for `name` and `addresses` (local testing and the demo only:
    clients must be told to trust it): (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
