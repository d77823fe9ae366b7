import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist.digests import digest, name_suffix_digests, query_digests, wire_name_to_dotted
from blocklist.domains import ProtectedNames, canonical_domain, domain_entry
from blocklist.errors import InvalidEntry


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("blocked.example", "blocked.example"),
        ("  Blocked.EXAMPLE.  ", "blocked.example"),
        ("*.blocked.example", "blocked.example"),
        ("WWW.Blocked.Test", "www.blocked.test"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("ｂｌｏｃｋｅｄ。example", "blocked.example"),  # fullwidth letters and ideographic dot
        ("under_score.example", "under_score.example"),
        ("a-b.example", "a-b.example"),
        ("пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"),
    ],
)
def test_canonical_forms(raw: str, canonical: str) -> None:
    assert canonical_domain(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (".", "empty"),
        ("*.", "empty"),
        ("a..example", "invalid_name"),
        ("bad name.example", "invalid_characters"),
        ("-lead.example", "invalid_characters"),
        ("trail-.example", "invalid_characters"),
        ("bad!.example", "invalid_characters"),
        ("xn--zz.example", "invalid_characters"),
        ("192.0.2.1", "ip_literal"),
        ("3221225985", "ip_literal"),
        ("0xc0.0x00.0x02.0x01", "ip_literal"),
        ("0300.0.02.01", "ip_literal"),
        ("192.0.513", "ip_literal"),
        ("[2001:db8::1]", "ip_literal"),
        ("2001:db8::1", "ip_literal"),
        ("blocked.example:8080", "ip_literal"),
        ("a" * 64 + ".example", "too_long"),
        (".".join(["a" * 63] * 4) + ".example", "too_long"),
        ("x" * 2000, "too_long"),
    ],
)
def test_refused_forms(raw: str, reason: str) -> None:
    with pytest.raises(InvalidEntry) as info:
        canonical_domain(raw)
    assert info.value.reason == reason
    assert str(info.value)


@pytest.mark.parametrize("name", ["com", "co.uk", "github.io", "test", "example", "*.co.uk"])
def test_public_suffixes_refused(name: str) -> None:
    with pytest.raises(InvalidEntry) as info:
        domain_entry(name)
    assert info.value.reason == "public_suffix"
    assert "Public Suffix List" in str(info.value)


def test_registrable_names_under_private_suffix_allowed() -> None:
    assert domain_entry("someone.github.io") == "someone.github.io"
    assert domain_entry("blocked-demo.test") == "blocked-demo.test"


def test_protected_names() -> None:
    protected = ProtectedNames(["www.protected.example", "Safe.Test"])
    for name in ["www.protected.example", "protected.example", "safe.test", "a.b.safe.test"]:
        with pytest.raises(InvalidEntry) as info:
            domain_entry(name, protected)
        assert info.value.reason == "protected_name"
    with pytest.raises(InvalidEntry, match=r"is above the protected name 'www.protected.example'"):
        domain_entry("protected.example", protected)
    with pytest.raises(InvalidEntry, match=r"is under the protected name 'safe.test'"):
        domain_entry("a.safe.test", protected)
    assert domain_entry("other.protected.example", protected) == "other.protected.example"
    assert domain_entry("unsafe.test", protected) == "unsafe.test"


def test_digest_is_sha256_of_canonical_text() -> None:
    # The value docs/protocol.md shows.
    assert digest("blocked.example").hex().startswith("1f30273176bf4342")
    assert digest("blocked.example").hex() == hashlib.sha256(b"blocked.example").hexdigest()
    assert digest("xn--bcher-kva.example") == hashlib.sha256(b"xn--bcher-kva.example").digest()


def test_query_digests_cover_every_suffix_but_the_tld() -> None:
    expected = [digest(n) for n in ["a.b.blocked.example", "b.blocked.example", "blocked.example"]]
    assert query_digests("A.b.BLOCKED.example.") == expected
    assert name_suffix_digests(b"a.b.blocked.example") == expected
    assert query_digests("example") == []
    assert query_digests("") == []


def test_wire_name_to_dotted() -> None:
    assert wire_name_to_dotted(b"\x03WwW\x07ExAmple\x00") == b"www.example"
    assert wire_name_to_dotted(b"\x00") == b""
    for bad in [b"\x03www", b"\x03www\x00extra", b"\xc0\x0c", b""]:
        with pytest.raises(ValueError):
            wire_name_to_dotted(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_canonicalization_is_idempotent_and_only_raises_invalid_entry(text: str) -> None:
    try:
        once = canonical_domain(text)
    except InvalidEntry:
        return
    assert canonical_domain(once) == once
    assert once == once.lower() and once.isascii() and not once.endswith(".")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20),
        min_size=1,
        max_size=8,
    )
)
def test_query_digests_bounded_by_labels(labels: list[str]) -> None:
    name = ".".join(labels)
    assert len(query_digests(name)) == len(labels) - 1
