"""From what an officer types to the canonical value and digest of a list entry."""

from __future__ import annotations

from blocklist.artefacts import MAX_VALUE_BYTES
from blocklist.digests import digest
from blocklist.domains import (
    ProtectedNames,
    check_domain_policy,
    domain_entry,
    is_public_suffix,
    looks_like_ipv4,
)
from blocklist.errors import InvalidEntry
from blocklist.state import Kind
from blocklist.urls import url_expression


def parse_kind(text: str) -> Kind:
    try:
        kind = Kind[text.strip().upper()]
    except KeyError:
        kind = None
    if kind is None or kind is Kind.URLHOST:  # URLHOST entries are derived, never typed in
        raise InvalidEntry(
            "bad_kind", f"unknown entry kind {text!r} (expected domain or url)"
        ) from None
    return kind


def guess_kind(raw: str) -> Kind:
    """A URL when the input has a scheme or a path; otherwise a domain."""
    text = raw.strip()
    return Kind.URL if "://" in text or "/" in text else Kind.DOMAIN


def canonical_url_entry(raw: str, protected: ProtectedNames | None = None) -> str:
    value = url_expression(raw)
    host, _, path = value.partition("/")
    if looks_like_ipv4(host) or host.startswith("["):
        raise InvalidEntry("ip_literal", f"{host!r} is an IP address; IP entries are not allowed")
    if is_public_suffix(host):
        raise InvalidEntry(
            "public_suffix", f"{host!r} is a public suffix; no site can be named by it"
        )
    # A URL entry is how content on a shared or protected host is listed, so only the whole-host
    # form (path "/") is refused there: it would block the protected site itself.
    if protected is not None and path == "":
        check_domain_policy(host, protected)
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise InvalidEntry("too_long", f"URL expression is longer than {MAX_VALUE_BYTES} bytes")
    return value


def canonical_entry(kind: Kind, raw: str, protected: ProtectedNames | None = None) -> str:
    """Canonical value of an entry after every authority-side check, or InvalidEntry."""
    if kind is Kind.DOMAIN:
        return domain_entry(raw, protected)
    return canonical_url_entry(raw, protected)


def entry_digest(
    kind: Kind, raw: str, protected: ProtectedNames | None = None
) -> tuple[str, bytes]:
    value = canonical_entry(kind, raw, protected)
    return value, digest(value)
