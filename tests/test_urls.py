"""URL canonicalization and lookup expressions (Safe Browsing "URLs and Hashing", API v4).

The spec's hostnames appear only in the canonicalization and expression tables copied from the
spec; every other test uses reserved names (RFC 2606 .example/.test, RFC 5737 addresses).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist.errors import InvalidEntry
from blocklist.urls import (
    MAX_UNESCAPE_ROUNDS,
    MAX_URL_LENGTH,
    canonicalize_url,
    url_expression,
    url_host,
    url_lookup_expressions,
)

# Every example of the spec's "Canonicalization" section, in its order (33 of them).
SPEC_CANONICALIZATION = [
    ("http://host/%25%32%35", "http://host/%25"),
    ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
    ("http://host/%2525252525252525", "http://host/%25"),
    ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
    ("http://host/%%%25%32%35asd%%", "http://host/%25%25%25asd%25%25"),
    ("http://www.google.com/", "http://www.google.com/"),
    (
        "http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/%77%77%77%2E%65%62%61%79%2E%63%6F%6D/",
        "http://168.188.99.26/.secure/www.ebay.com/",
    ),
    (
        "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
        "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
    ),
    (
        "http://host%23.com/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833%252944_55%252B",
        "http://host%23.com/~a!b@c%23d$e%25f^00&11*22(33)44_55+",
    ),
    ("http://3279880203/blah", "http://195.127.0.11/blah"),
    ("http://www.google.com/blah/..", "http://www.google.com/"),
    ("www.google.com/", "http://www.google.com/"),
    ("www.google.com", "http://www.google.com/"),
    ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
    ("http://www.GOOgle.com/", "http://www.google.com/"),
    ("http://www.google.com.../", "http://www.google.com/"),
    ("http://www.google.com/foo\tbar\rbaz\n2", "http://www.google.com/foobarbaz2"),
    ("http://www.google.com/q?", "http://www.google.com/q?"),
    ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
    ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
    ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
    ("http://evil.com/foo;", "http://evil.com/foo;"),
    ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
    # The spec's C string "http://\x01\x80.com/" holds the octet 0x80. A Python str cannot hold
    # an octet, only the character U+0080 (UTF-8 C2 80); the octet is written as its escape.
    ("http://\x01%80.com/", "http://%01%80.com/"),
    ("http://notrailingslash.com", "http://notrailingslash.com/"),
    ("http://www.gotaport.com:1234/", "http://www.gotaport.com/"),
    ("  http://www.google.com/  ", "http://www.google.com/"),
    ("http:// leadingspace.com/", "http://%20leadingspace.com/"),
    ("http://%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("https://www.securesite.com/", "https://www.securesite.com/"),
    ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
    ("http://host.com//twoslashes?more//slashes", "http://host.com/twoslashes?more//slashes"),
]


@pytest.mark.parametrize(("raw", "canonical"), SPEC_CANONICALIZATION)
def test_spec_canonicalization_examples(raw: str, canonical: str) -> None:
    assert canonicalize_url(raw) == canonical
    assert canonicalize_url(canonical) == canonical


def test_spec_example_count() -> None:
    assert len(SPEC_CANONICALIZATION) == 33


def test_character_u0080_in_host_is_idna_checked_not_taken_as_an_octet() -> None:
    # Non-ASCII host text goes through IDNA; U+0080 (and U+0001) are not allowed in names.
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url("http://\x01\x80.com/")
    assert info.value.reason == "invalid_url"


# The spec's "Suffix/Prefix Expressions" examples, in the spec's order.
SPEC_EXPRESSIONS = [
    (
        "http://a.b.c/1/2.html?param=1",
        [
            "a.b.c/1/2.html?param=1",
            "a.b.c/1/2.html",
            "a.b.c/",
            "a.b.c/1/",
            "b.c/1/2.html?param=1",
            "b.c/1/2.html",
            "b.c/",
            "b.c/1/",
        ],
    ),
    (
        "http://a.b.c.d.e.f.g/1.html",
        [
            "a.b.c.d.e.f.g/1.html",
            "a.b.c.d.e.f.g/",
            # b.c.d.e.f.g is skipped: only the full host and the last five components count.
            "c.d.e.f.g/1.html",
            "c.d.e.f.g/",
            "d.e.f.g/1.html",
            "d.e.f.g/",
            "e.f.g/1.html",
            "e.f.g/",
            "f.g/1.html",
            "f.g/",
        ],
    ),
    ("http://1.2.3.4/1/", ["1.2.3.4/1/", "1.2.3.4/"]),
]


@pytest.mark.parametrize(("url", "expressions"), SPEC_EXPRESSIONS)
def test_spec_expression_examples(url: str, expressions: list[str]) -> None:
    assert url_lookup_expressions(url) == expressions


@pytest.mark.parametrize(
    ("url", "expressions"),
    [
        # Four path prefixes at most: "/" and three directories.
        (
            "http://a.b.example/1/2/3/4/5/",
            [
                "a.b.example/1/2/3/4/5/",
                "a.b.example/",
                "a.b.example/1/",
                "a.b.example/1/2/",
                "a.b.example/1/2/3/",
                "b.example/1/2/3/4/5/",
                "b.example/",
                "b.example/1/",
                "b.example/1/2/",
                "b.example/1/2/3/",
            ],
        ),
        # Exactly five labels: the last-five string is the host itself.
        (
            "http://a.b.c.d.example/",
            ["a.b.c.d.example/", "b.c.d.example/", "c.d.example/", "d.example/"],
        ),
        ("http://localhost/x", ["localhost/x", "localhost/"]),
        ("http://[2001:db8::1]/a/b", ["[2001:db8::1]/a/b", "[2001:db8::1]/", "[2001:db8::1]/a/"]),
        # An empty query is still a query: the URL with "?" is its own expression.
        ("http://shop.example/q?", ["shop.example/q?", "shop.example/q", "shop.example/"]),
    ],
)
def test_more_expressions(url: str, expressions: list[str]) -> None:
    assert url_lookup_expressions(url) == expressions


def test_expressions_accept_canonical_input() -> None:
    raw = "HTTP://User:pw@WWW.Shop.Example:8443/a/./b/../c.html?q=1#top"
    expected = url_lookup_expressions(raw)
    assert url_lookup_expressions(canonicalize_url(raw)) == expected
    assert url_lookup_expressions(url_expression(raw)) == expected
    assert expected[0] == url_expression(raw) == "www.shop.example/a/c.html?q=1"


@pytest.mark.parametrize(
    ("url", "expression"),
    [
        ("HTTP://a.b.example:8080/1/./2/?x=1#f", "a.b.example/1/2/?x=1"),
        ("https://files.example/doc.pdf", "files.example/doc.pdf"),
        ("files.example", "files.example/"),
        ("http://user:secret@files.example/", "files.example/"),
        ("http://files.example/a%2Fb/../c", "files.example/a/c"),  # "%2F" unescapes to "/"
        ("http://files.example/%7Euser/", "files.example/~user/"),
        ("http://files.example/caf%C3%A9 menu", "files.example/caf%C3%A9%20menu"),
        ("http://files.example/café", "files.example/caf%C3%A9"),
        ("http://files.example/a/b/./../../..", "files.example/"),
        ("http://files.example/a/.", "files.example/a/"),
        ("http://files.example/a/..b", "files.example/a/..b"),
        ("http://files.example?only=query", "files.example/?only=query"),
        ("http://files.example/p?a=%2525", "files.example/p?a=%25"),
        ("http://files.example/p?x=%3F%23", "files.example/p?x=?%23"),
        ("//files.example/p", "files.example/p"),
    ],
)
def test_url_expression(url: str, expression: str) -> None:
    assert url_expression(url) == expression
    assert url_expression(expression) == expression


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://WWW.Files.Example./", "www.files.example"),
        ("http://..files..example../", "files.example"),
        ("http://user@files.example:81/", "files.example"),
        ("http://bücher.example/", "xn--bcher-kva.example"),
        ("http://B%C3%BCcher.example/", "xn--bcher-kva.example"),  # unescaped, then IDNA
        ("http://ｆｉｌｅｓ。example/", "files.example"),  # UTS-46 mapping, ideographic dot
        ("http://192.0.2.1/", "192.0.2.1"),
        ("http://0xC0.0.2.1/", "192.0.2.1"),  # hex part
        ("http://0300.0.2.1/", "192.0.2.1"),  # octal part
        ("http://0300.0.513/", "192.0.2.1"),  # three parts: the last fills 16 bits
        ("http://192.131073/", "192.2.0.1"),  # two parts: the last fills 24 bits
        ("http://3221225985/", "192.0.2.1"),  # one part: 32 bits
        ("http://0xc0000201/", "192.0.2.1"),
        ("http://192.0.2.256/", "192.0.2.256"),  # not an address: stays a host name
        ("http://1.2.3.4.5/", "1.2.3.4.5"),
        ("http://09.1.1.1/", "09.1.1.1"),  # 9 is no octal digit
        ("http://[2001:0DB8:0000::1]:8080/", "[2001:db8::1]"),
        ("http://[::ffff:192.0.2.1]/", "192.0.2.1"),  # IPv4-mapped
        ("http://[64:ff9b::192.0.2.1]/", "192.0.2.1"),  # NAT64
        ("http://W!eird<>Ho$^.example/", "w!eird<>ho$^.example"),  # the spec escapes, not refuses
        ("http://a%80b.example/", "a%80b.example"),  # an octet that is not UTF-8 text
    ],
)
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host


def test_ip_hosts_get_no_suffixes() -> None:
    assert url_lookup_expressions("http://0xC0.0.2.1/a") == ["192.0.2.1/a", "192.0.2.1/"]


@pytest.mark.parametrize("url", ["", "   ", "\t\r\n", " \t "])
def test_empty(url: str) -> None:
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url(url)
    assert info.value.reason == "empty"
    assert "empty" in str(info.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("/just/a/path", "no host"),
        ("?q", "no host"),
        ("#fragment", "no host"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://.../", "no host"),
        ("http://user@/", "no host"),
        ("http:files.example/", "'//' missing"),
        ("ftp://files.example/", "scheme 'ftp'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("mailto:someone@files.example", "scheme 'mailto'"),
        ("FILE:///etc/passwd", "scheme 'file'"),
        ("http://files.example:http/", "port"),
        ("files.example:80x/", "scheme 'files.example'"),
        ("http://a:b:80/", "port"),
        ("http://[2001:db8::1/", "IPv6"),
        ("http://[2001:db8::1]x/", "IPv6"),
        ("http://[not-an-address]/", "IPv6"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://files[1].example/", "'['"),
        ("http://\x01é.example/", "internationalized"),
        ("http://bad_é.example/", "internationalized"),
        ("http://é.example/\ud800", "Unicode"),
        ("http://%E2%98%83" + "é" * 70 + ".example/", "internationalized"),  # label too long
    ],
)
def test_invalid_url(url: str, problem: str) -> None:
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url(url)
    assert info.value.reason == "invalid_url"
    message = str(info.value)
    assert problem in message
    assert repr(url)[:40] in message  # the input is quoted


def test_too_long_input_refused_before_any_work() -> None:
    url = "http://files.example/" + "a" * MAX_URL_LENGTH
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url(url)
    assert info.value.reason == "too_long"
    message = str(info.value)
    assert str(len(url)) in message
    assert "'http://files.example/aaa" in message
    assert len(message) < 200  # the quote is truncated


def test_input_at_the_limit_is_accepted() -> None:
    url = "http://files.example/" + "a" * (MAX_URL_LENGTH - len("http://files.example/"))
    assert canonicalize_url(url) == url


def test_too_long_once_escaped() -> None:
    # 3000 characters become 9000 once each is escaped as "%01".
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url("http://files.example/" + "\x01" * 3000)
    assert info.value.reason == "too_long"
    assert "escaped" in str(info.value)


def test_unescape_rounds_are_bounded() -> None:
    # Each round turns one "%25" back into "%"; one level more than allowed is refused.
    deep = "http://files.example/%" + "25" * MAX_UNESCAPE_ROUNDS + "41"
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url(deep)
    assert info.value.reason == "too_long"
    assert "nested" in str(info.value)
    shallow = "http://files.example/%" + "25" * (MAX_UNESCAPE_ROUNDS - 2) + "41"
    assert canonicalize_url(shallow) == "http://files.example/A"


def test_non_text_input_is_an_invalid_entry() -> None:
    with pytest.raises(InvalidEntry) as info:
        canonicalize_url(b"http://files.example/")  # type: ignore[arg-type]
    assert info.value.reason == "invalid_url"


# Text built from URL pieces, so that most examples get past the parser into the host and path
# rules; plain text() covers the rest.
_URL_ALPHABET = st.sampled_from(
    [
        *"aZ09.-_/?#%:@[]~ !\t\x00\x01\x7f",
        *("%25", "%2e", "%2F", "%3F", "%23", "%80", "%C3%A9"),
        *("..", "/./", "/../", "//", "é", "。", "ü", "\u0080", "0x", "07", "255", "xn--"),
    ]
)
_URL_TEXT = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["", "http://", "HTTPS://", "//", "ftp://", "http:", " "]),
        st.lists(_URL_ALPHABET, max_size=30).map("".join),
    ),
)
_ANY_TEXT = st.one_of(st.text(max_size=60), _URL_TEXT)


def _outcome(url: str) -> str | InvalidEntry:
    try:
        return canonicalize_url(url)
    except InvalidEntry as exc:  # anything else fails the test
        return exc


@settings(max_examples=400, deadline=None)
@given(_ANY_TEXT)
def test_canonicalize_is_idempotent_and_raises_only_invalid_entry(url: str) -> None:
    first = _outcome(url)
    if isinstance(first, InvalidEntry):
        assert first.reason in {"empty", "invalid_url", "too_long"}
        return
    assert first.isascii()
    assert canonicalize_url(first) == first
    expression = url_expression(url)
    assert first.endswith("://" + expression)
    assert url_expression(expression) == expression


@settings(max_examples=300, deadline=None)
@given(_ANY_TEXT)
def test_lookup_expressions_are_few_unique_and_start_with_the_entry(url: str) -> None:
    try:
        expressions = url_lookup_expressions(url)
    except InvalidEntry:
        return
    assert 1 <= len(expressions) <= 30
    assert len(set(expressions)) == len(expressions)
    assert expressions[0] == url_expression(url)
    assert url_lookup_expressions(canonicalize_url(url)) == expressions
    assert url_host(url) == expressions[0].split("/", 1)[0]
