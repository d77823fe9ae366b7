import pytest

from blocklist.digests import digest
from blocklist.domains import ProtectedNames
from blocklist.entries import canonical_entry, entry_digest, guess_kind, parse_kind
from blocklist.errors import InvalidEntry
from blocklist.state import Kind

PROTECTED = ProtectedNames(["www.protected.example"])


def test_guess_and_parse_kind() -> None:
    assert guess_kind("blocked.example") is Kind.DOMAIN
    assert guess_kind("*.blocked.example") is Kind.DOMAIN
    assert guess_kind("http://shared.example/a") is Kind.URL
    assert guess_kind("shared.example/a/b") is Kind.URL
    assert parse_kind(" URL ") is Kind.URL
    with pytest.raises(InvalidEntry) as info:
        parse_kind("ip")
    assert info.value.reason == "bad_kind"


def test_url_entries_are_expressions_without_scheme() -> None:
    value, d = entry_digest(Kind.URL, "HTTP://Shared.Example:8080/album/./7/?id=3#top")
    assert value == "shared.example/album/7/?id=3"
    assert d == digest(value)


def test_domain_entry_digest() -> None:
    assert entry_digest(Kind.DOMAIN, "*.Blocked.Example.") == (
        "blocked.example",
        digest("blocked.example"),
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("http://192.0.2.7/album/", "ip_literal"),
        ("http://3221225991/album/", "ip_literal"),
        ("http://[2001:db8::7]/album/", "ip_literal"),
        ("http://co.uk/album/", "public_suffix"),
        ("http://github.io/", "public_suffix"),
        ("http://www.protected.example/", "protected_name"),
        ("http://protected.example/", "protected_name"),
        ("ftp://shared.example/a", "invalid_url"),
        ("", "empty"),
        ("http://shared.example/" + "a" * 5000, "too_long"),
    ],
)
def test_url_entry_refusals(raw: str, reason: str) -> None:
    with pytest.raises(InvalidEntry) as info:
        canonical_entry(Kind.URL, raw, PROTECTED)
    assert info.value.reason == reason


def test_url_entry_under_protected_host_is_allowed() -> None:
    # Content on a major shared host is listed by URL, never by blocking the host's name.
    value = canonical_entry(Kind.URL, "http://www.protected.example/user/123/", PROTECTED)
    assert value == "www.protected.example/user/123/"
