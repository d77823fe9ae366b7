"""Which list entry, if any, blocks the address a request asked for.

The Host header is canonicalised as the authority canonicalises domain entries (IDNA, lowercase,
no port); its digest and the digests of its parents are looked up among the domain entries, as
the resolver does. URL entries (a path on a shared host) are matched with the Safe Browsing
host-suffix x path-prefix expressions of host + path. Only digests are compared: the stop page
never needs, and in the hashed edition never has, the listed names.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256

from blocklist.digests import digest
from blocklist.domains import canonical_domain, looks_like_ipv4
from blocklist.errors import InvalidEntry
from blocklist.state import ID_SIZE, Kind, ListState, bisect_digest
from blocklist.sync.verified import VerifiedList
from blocklist.urls import MAX_URL_LENGTH, url_lookup_expressions

_CACHE_LIMIT = 4096
# Names already in canonical form once lowercased: ASCII letters, digits, '_' and inner '-', no
# punycode label. Most Host headers are like this; they skip the IDNA mapping, which would give
# the same result (tests/test_stoppage_units.py compares both on generated names).
_PLAIN_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)


@dataclass(slots=True)  # not frozen: cheaper to build, one per request
class Match:
    entry_id: int
    kind: Kind


def canonical_host(header: str) -> str | None:
    """The canonical domain of a Host header value, or None (IP literal, junk, empty)."""
    host = header.lower()
    if host.endswith("."):
        host = host[:-1]
    if len(host) <= 253 and "xn--" not in host and _PLAIN_NAME.fullmatch(host):
        return None if looks_like_ipv4(host) else host
    return _canonical_host_slow(header)


@lru_cache(maxsize=_CACHE_LIMIT)
def _canonical_host_slow(header: str) -> str | None:
    host = header.strip()
    if not host or host.startswith("[") or len(host) > 300:
        return None
    name, sep, port = host.rpartition(":")
    if sep:
        if not port.isdigit() or len(port) > 5:
            return None
        host = name
    try:
        return canonical_domain(host)
    except (InvalidEntry, ValueError):
        return None


_PATH_HOST = "a.invalid"
_CACHED_PATH = 256


@lru_cache(maxsize=_CACHE_LIMIT)
def _path_strings(raw_path: str) -> tuple[str, ...]:
    # The path half of the lookup expressions depends on the path alone: compute it once per
    # path with a placeholder host (a path starting with "/" cannot change where the host ends).
    try:
        expressions = url_lookup_expressions(f"http://{_PATH_HOST}{raw_path}")
    except (InvalidEntry, ValueError):
        return ()
    return tuple(e[len(_PATH_HOST) :] for e in expressions)


def lookup_expressions(host: str, raw_path: str) -> list[str]:
    """`url_lookup_expressions("http://" + host + path)` for a canonical host, faster.

    For a plain host (see _PLAIN_NAME) the host suffixes are its last five labels, then fewer,
    never the top-level label alone; the path strings are cached per path. Anything else takes
    the reference path. tests/test_stoppage_units.py compares both on generated hosts and paths.
    """
    path = raw_path if raw_path.startswith("/") else "/" + raw_path
    if len(host) + len(path) + 64 > MAX_URL_LENGTH or not _PLAIN_NAME.fullmatch(host):
        try:
            return url_lookup_expressions(f"http://{host}{path}")
        except (InvalidEntry, ValueError):
            return []
    # Long paths are computed each time: the cache stays small (4096 x 256 characters at most).
    paths = _path_strings(path) if len(path) <= _CACHED_PATH else _path_strings.__wrapped__(path)
    labels = host.split(".")[-5:]
    hosts = list(dict.fromkeys([host, *(".".join(labels[i:]) for i in range(len(labels) - 1))]))
    return list(dict.fromkeys(h + p for h in hosts[:5] for p in paths))


def prefix_starts(digests: bytes) -> array:
    """starts[p] = index of the first digest whose first two bytes are >= p (65,537 entries).

    Digests are uniform, so a 1M-entry list has ~15 per prefix: a lookup bisects those instead
    of the whole list (4 steps instead of 20, each a slice in Python).
    """
    counts = array("I", bytes(4 * 65537))
    for hi, lo in zip(digests[0::32], digests[1::32], strict=True):
        counts[(hi << 8) | lo] += 1
    total = 0
    for p in range(65537):
        n = counts[p]
        counts[p] = total
        total += n
    return counts


class Matcher:
    """Lookups against one verified list; replaced as a whole when a new list arrives."""

    def __init__(self, verified: VerifiedList | None) -> None:
        self.verified = verified
        self.state = verified.state if verified is not None else ListState.empty()
        self.serial = verified.serial if verified is not None else None
        self.authority = verified.notification.authority if verified is not None else ""
        self.has_urls = int(Kind.URL) in self.state.kinds
        self._starts = prefix_starts(self.state.digests)
        self._domains: dict[str, Match | None] = {}
        self._urls: dict[tuple[str, str], Match | None] = {}

    def index_of(self, d: bytes) -> int:
        """Index of digest `d` in the list, or -1 (same answer as ListState.index_of)."""
        p = (d[0] << 8) | d[1]
        digests = self.state.digests
        i = bisect_digest(digests, d, self._starts[p], self._starts[p + 1])
        return i if digests[i * 32 : i * 32 + 32] == d else -1

    def _hit(self, d: bytes, kind: Kind) -> Match | None:
        state = self.state
        i = self.index_of(d)
        if i < 0 or state.kinds[i] != kind:
            return None
        return Match(int.from_bytes(state.ids[i * ID_SIZE : (i + 1) * ID_SIZE], "big"), kind)

    def lookup_domain(self, host: str) -> Match | None:
        try:
            return self._domains[host]
        except KeyError:
            pass
        # The name, then each parent but the top-level label (as query_digests), digested one
        # at a time: a listed name stops at its first digest.
        found = None
        name = host.encode()
        start, last = 0, name.rfind(b".")
        while 0 <= start <= last:
            found = self._hit(sha256(name[start:]).digest(), Kind.DOMAIN)
            if found is not None:
                break
            start = name.find(b".", start) + 1
        if len(self._domains) >= _CACHE_LIMIT:
            self._domains.clear()
        self._domains[host] = found
        return found

    def lookup_url(self, host: str, raw_path: str) -> Match | None:
        if not self.has_urls:
            return None
        key = (host, raw_path)
        try:
            return self._urls[key]
        except KeyError:
            pass
        found = None
        for expression in lookup_expressions(host, raw_path):
            found = self._hit(digest(expression), Kind.URL)
            if found is not None:
                break
        if len(raw_path) <= _CACHED_PATH:
            if len(self._urls) >= _CACHE_LIMIT:
                self._urls.clear()
            self._urls[key] = found
        return found

    def lookup(self, host: str | None, raw_path: str = "/") -> Match | None:
        """The entry blocking canonical `host` (+ `raw_path` for URL entries), or None."""
        if host is None:
            return None
        return self.lookup_domain(host) or self.lookup_url(host, raw_path)
