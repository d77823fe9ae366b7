"""Canonical form and lookup expressions of URL entries.

Follows the published Safe Browsing "URLs and Hashing" rules (API v4, sections "Canonicalization"
and "Suffix/Prefix Expressions"), not any one client's variations: authority and client must
derive byte-identical strings, because only their SHA-256 digests are compared.

The spec reasons about a URL as bytes (it percent-unescapes to arbitrary octets and escapes
octets >= 127), so the work below is done on the UTF-8 bytes of the input. Scheme and port take
no part in an entry: `url_expression` is the canonical URL without them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

import idna

from blocklist.errors import InvalidEntry

MAX_URL_LENGTH = 8192  # characters, on input and on the canonical URL (so output re-parses)
MAX_UNESCAPE_ROUNDS = 64  # the spec's deepest example needs 9; real URLs need 1 to 3
MAX_HOST_STRINGS = 5  # exact host plus up to four suffixes
MAX_PATH_STRINGS = 6  # path with query, path, and four prefixes
_MAX_PATH_PREFIXES = 4  # "/" plus up to three directories
_SCHEMES = frozenset({"http", "https"})

# RFC 3986 scheme syntax, matched on the unescaped URL as the spec unescapes before parsing.
_SCHEME = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*):")
# "host:port/..." without a scheme: the text before ':' is a host, not a scheme.
_PORT_THEN_END = re.compile(rb"[0-9]*(?:[/?]|\Z)")
_IPV6_PORT = re.compile(rb"(?::[0-9]*)?")
_DOT_RUNS = re.compile(rb"\.{2,}")
_SLASH_RUNS = re.compile(rb"/{2,}")
# inet_aton forms: hex (0x, digits optional as in inet_aton), octal (leading 0), decimal.
# Decimal is capped at 10 digits: longer cannot fit 32 bits, and int() refuses huge strings.
_IPV4_PART = re.compile(rb"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]{0,9}")
_A_LABEL_HOST = re.compile(rb"[a-z0-9.\-]+")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Spec: escape every octet <= 32, >= 127, '#' and '%', with uppercase hex.
_ESCAPE_TABLE = tuple(
    f"%{b:02X}" if b <= 0x20 or b >= 0x7F or b in b"#%" else chr(b) for b in range(256)
)


class _Parts(NamedTuple):
    scheme: str
    host: str  # canonical and escaped; IPv6 keeps its brackets
    path: str  # canonical and escaped, always starts with "/"
    query: str | None  # escaped; None when the URL has no "?" ("q?" keeps an empty query)
    is_ip: bool


def _excerpt(url: str, limit: int = 80) -> str:
    # repr() keeps control characters visible; truncation keeps messages readable.
    return repr(url if len(url) <= limit else url[: limit - 1] + "…")


def _invalid(url: str, problem: str) -> InvalidEntry:
    return InvalidEntry("invalid_url", f"URL {_excerpt(url)} {problem}")


def _escape(data: bytes) -> str:
    return "".join(map(_ESCAPE_TABLE.__getitem__, data))


def _unescape(data: bytes, url: str) -> bytes:
    """Percent-unescape until nothing changes (spec step 3), within a fixed number of rounds."""
    for _ in range(MAX_UNESCAPE_ROUNDS):
        decoded = unquote_to_bytes(data)
        if decoded == data:
            return data
        data = decoded
    raise InvalidEntry(
        "too_long",
        f"URL {_excerpt(url)} has percent-escapes nested more than {MAX_UNESCAPE_ROUNDS} deep",
    )


def _trim_dots(host: bytes) -> bytes:
    # Spec host steps 1 and 2: no leading/trailing dots, runs of dots become one.
    return _DOT_RUNS.sub(b".", host).strip(b".")


def _ipv4(host: bytes) -> bytes | None:
    """Dotted quad for any legal inet_aton spelling (1 to 4 parts, hex/octal/decimal), else None."""
    parts = host.split(b".")
    if len(parts) > 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if not _IPV4_PART.fullmatch(part):
            return None
        if part[:2] in (b"0x", b"0X"):
            numbers.append(int(part[2:] or b"0", 16))
        elif part.startswith(b"0"):
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *head, last = numbers
    # Leading parts are one byte each; the last part fills all remaining bytes.
    if any(n > 255 for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for index, number in enumerate(head):
        value |= number << (8 * (3 - index))
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0)).encode("ascii")


def _ipv6(bracketed: bytes, url: str) -> tuple[str, bool]:
    """Canonical text of a bracketed IPv6 literal.

    The v4 spec is silent on IPv6; this follows the current Safe Browsing reference: compressed
    lowercase form, IPv4-mapped and NAT64 (64:ff9b::/96) addresses become the IPv4 address.
    """
    inner = bracketed[1:-1]
    if b"%" in inner:  # a zone index names a local interface, not a host
        raise _invalid(url, "has an IPv6 zone index")
    try:
        address = ipaddress.IPv6Address(inner.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid(url, "has an invalid IPv6 address") from exc
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped), True
    if address in _NAT64:
        return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)), True
    # str() would vary by Python version only for IPv4-mapped addresses, handled above.
    return f"[{address.compressed}]", True


def _idna_host(host: bytes, url: str) -> bytes:
    """A-labels for a host that has non-ASCII octets, if those octets are UTF-8 text."""
    try:
        text = host.decode("utf-8")
    except UnicodeDecodeError:
        # Raw octets (e.g. from "%80") are not characters: the spec escapes them as they are.
        return host
    # idna refuses empty labels, so apply the spec's dot rules first (and again after mapping).
    text = re.sub(r"\.{2,}", ".", text).strip(".")
    if not text:
        raise _invalid(url, "has no host")
    try:
        encoded = idna.encode(text, uts46=True)
    except (idna.IDNAError, UnicodeError) as exc:
        # idna's message quotes the whole host; keep only its start.
        detail = _excerpt(str(exc), 60)
        raise _invalid(
            url, f"has a host that is not a valid internationalized name: {detail}"
        ) from exc
    if not _A_LABEL_HOST.fullmatch(encoded):
        raise _invalid(url, "has a host that maps to characters not allowed in names")
    return encoded


def _canonical_host(hostport: bytes, url: str) -> tuple[str, bool]:
    """Canonical host (escaped) and whether it is an IP address; the port is dropped."""
    if hostport.startswith(b"["):
        end = hostport.find(b"]")
        if end < 0 or not _IPV6_PORT.fullmatch(hostport, end + 1):
            raise _invalid(url, "has a malformed IPv6 host or port")
        return _ipv6(hostport[: end + 1], url)
    # A host never holds ':' after this, so the canonical URL parses the same way again.
    host, _, port = hostport.partition(b":")
    if port and not port.isdigit():
        raise _invalid(url, "has a port that is not a number")
    if b"[" in host or b"]" in host:
        raise _invalid(url, "has '[' or ']' outside an IPv6 host")
    if not host.isascii():
        host = _idna_host(host, url)
    host = _trim_dots(host)
    if not host:
        raise _invalid(url, "has no host")
    address = _ipv4(host)
    if address is not None:
        return address.decode("ascii"), True
    return _escape(host.lower()), False


def _canonical_path(path: bytes) -> bytes:
    """Resolve "/./" and "/../" (a trailing "/." or "/.." too), then collapse runs of "/"."""
    if not path:
        return b"/"
    segments = path.split(b"/")[1:]  # the path starts with "/"
    kept: list[bytes] = []
    for index, segment in enumerate(segments):
        if segment in (b".", b".."):
            if segment == b".." and kept:
                kept.pop()
            if index == len(segments) - 1:
                kept.append(b"")  # "/a/.." and "/a/." end at a directory: keep the slash
            continue
        kept.append(segment)
    return _SLASH_RUNS.sub(b"/", b"/" + b"/".join(kept))


def _canonical_parts(url: str) -> _Parts:
    if not isinstance(url, str):
        raise InvalidEntry("invalid_url", f"URL must be text, not {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidEntry(
            "too_long",
            f"URL {_excerpt(url)} is {len(url)} characters long (limit {MAX_URL_LENGTH})",
        )
    # Spec: remove tab, CR and LF anywhere (not their escapes), then surrounding whitespace.
    text = url.replace("\t", "").replace("\r", "").replace("\n", "").strip(" \f\v")
    if not text:
        raise InvalidEntry("empty", f"URL {_excerpt(url)} is empty")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise _invalid(url, "is not valid Unicode text") from exc
    # Spec: drop the fragment before unescaping, so "%23" stays part of the path or host.
    data = data.partition(b"#")[0]
    data = _unescape(data, url)

    match = _SCHEME.match(data)
    if match and (
        data.startswith(b"//", match.end()) or not _PORT_THEN_END.match(data, match.end())
    ):
        scheme = match.group(1).decode("ascii").lower()
        if scheme not in _SCHEMES:
            raise _invalid(url, f"has scheme {scheme!r}; only http and https can be listed")
        if not data.startswith(b"//", match.end()):
            raise _invalid(url, "has no host ('//' missing after the scheme)")
        rest = data[match.end() + 2 :]
    else:
        scheme = "http"  # spec: "www.google.com" canonicalizes to "http://www.google.com/"
        rest = data[2:] if data.startswith(b"//") else data

    # '#' is ordinary here: a fragment is already gone, any '#' now came from "%23".
    authority_end = min(
        (i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest)
    )
    authority, path_and_query = rest[:authority_end], rest[authority_end:]
    path, has_query, query = path_and_query.partition(b"?")
    # Userinfo is not part of the canonical URL; the last '@' ends it.
    host, is_ip = _canonical_host(authority.rpartition(b"@")[2], url)

    parts = _Parts(
        scheme=scheme,
        host=host,
        path=_escape(_canonical_path(path)),  # spec: query keeps its slashes and dots
        query=_escape(query) if has_query else None,
        is_ip=is_ip,
    )
    if len(_join(parts)) > MAX_URL_LENGTH:
        # Refused so that every canonical URL is itself acceptable input (idempotence).
        raise InvalidEntry(
            "too_long",
            f"URL {_excerpt(url)} is longer than {MAX_URL_LENGTH} characters once escaped",
        )
    return parts


def _join(parts: _Parts) -> str:
    query = "" if parts.query is None else "?" + parts.query
    return f"{parts.scheme}://{parts.host}{parts.path}{query}"


def canonicalize_url(url: str) -> str:
    """The spec's canonical URL, e.g. "http://www.google.com/", or raise InvalidEntry."""
    return _join(_canonical_parts(url))


def url_expression(url: str) -> str:
    """The canonical value of a URL entry: "host/path" or "host/path?query", no scheme or port."""
    return canonicalize_url(url).partition("://")[2]


def url_host(url: str) -> str:
    """The canonical host of a URL (A-labels, lowercase, dotted-quad for IPv4, [..] for IPv6)."""
    return _canonical_parts(url).host


def url_lookup_expressions(url: str) -> list[str]:
    """The spec's host-suffix x path-prefix expressions, in its order, unique, at most 30.

    The first is always `url_expression(url)`, so a listed URL matches itself.
    """
    parts = _canonical_parts(url)
    hosts = [parts.host]
    if not parts.is_ip:
        # The last five labels, then successively fewer, never the top-level label alone.
        labels = parts.host.split(".")[-5:]
        hosts.extend(".".join(labels[i:]) for i in range(len(labels) - 1))
    paths = [] if parts.query is None else [f"{parts.path}?{parts.query}"]
    paths.append(parts.path)
    prefix = "/"
    paths.append(prefix)
    # Directories only: the last segment is a file name, or empty after a trailing slash.
    for segment in parts.path.split("/")[1:-1][: _MAX_PATH_PREFIXES - 1]:
        prefix += segment + "/"
        paths.append(prefix)
    unique_hosts = list(dict.fromkeys(hosts))[:MAX_HOST_STRINGS]
    unique_paths = list(dict.fromkeys(paths))[:MAX_PATH_STRINGS]
    return list(dict.fromkeys(h + p for h in unique_hosts for p in unique_paths))
