"""TLS for the DoT and DoH listeners: the server context and the certificate's facts.

`server_context` loads the configured certificate and key with errors that name the key and
the file, offers ALPN ("dot" for DNS over TLS, "h2"/"http/1.1" for DNS over HTTPS), asks TLS 1.2
at least, and counts (or, with `require_sni`, refuses) clients that name no server.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509

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


def _no_password() -> str:
    raise ValueError("tls.private_key: the key asks for a password: give it unencrypted")


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
    if b"ENCRYPTED" in key:  # OpenSSL would ask for its password on the terminal, and wait
        raise ValueError(
            f"tls.private_key: {tls.private_key} is encrypted: give the key unencrypted, "
            "readable only by the service's user"
        )
    try:
        ctx.load_cert_chain(str(tls.certificate), str(tls.private_key), password=_no_password)
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
