"""Which list entry, if any, blocks the address a request asked for.

The Host header is canonicalised as the authority canonicalises domain entries (IDNA, lowercase,
no port); its digest and the digests of its parents are looked up among the domain entries, as
the resolver does. URL entries (a path on a shared host) are matched with the Safe Browsing
host-suffix x path-prefix expressions of host + path. Only digests are compared: the stop page
never needs, and in the hashed edition never has, the listed names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from blocklist.digests import digest, query_digests
from blocklist.domains import canonical_domain, looks_like_ipv4
from blocklist.errors import InvalidEntry
from blocklist.state import ID_SIZE, Kind, ListState
from blocklist.sync.verified import VerifiedList
from blocklist.urls import url_lookup_expressions

_CACHE_LIMIT = 4096
# Names already in canonical form once lowercased: ASCII letters, digits, '_' and inner '-', no
# punycode label. Most Host headers are like this; they skip the IDNA mapping, which would give
# the same result (tests/test_stoppage_units.py compares both on generated names).
_PLAIN_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)


@dataclass(frozen=True, slots=True)
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


class Matcher:
    """Lookups against one verified list; replaced as a whole when a new list arrives."""

    def __init__(self, verified: VerifiedList | None) -> None:
        self.verified = verified
        self.state = verified.state if verified is not None else ListState.empty()
        self.serial = verified.serial if verified is not None else None
        self.authority = verified.notification.authority if verified is not None else ""
        self.has_urls = int(Kind.URL) in self.state.kinds
        self._domains: dict[str, Match | None] = {}
        self._urls: dict[tuple[str, str], Match | None] = {}

    def _hit(self, d: bytes, kind: Kind) -> Match | None:
        state = self.state
        i = state.index_of(d)
        if i < 0 or state.kinds[i] != kind:
            return None
        return Match(int.from_bytes(state.ids[i * ID_SIZE : (i + 1) * ID_SIZE], "big"), kind)

    def lookup_domain(self, host: str) -> Match | None:
        try:
            return self._domains[host]
        except KeyError:
            pass
        found = None
        for d in query_digests(host):
            found = self._hit(d, Kind.DOMAIN)
            if found is not None:
                break
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
        path = raw_path if raw_path.startswith("/") else "/" + raw_path
        try:
            expressions = url_lookup_expressions(f"http://{host}{path}")
        except (InvalidEntry, ValueError):
            expressions = []
        for expression in expressions:
            found = self._hit(digest(expression), Kind.URL)
            if found is not None:
                break
        if len(self._urls) >= _CACHE_LIMIT:
            self._urls.clear()
        self._urls[key] = found
        return found

    def lookup(self, host: str | None, raw_path: str = "/") -> Match | None:
        """The entry blocking canonical `host` (+ `raw_path` for URL entries), or None."""
        if host is None:
            return None
        return self.lookup_domain(host) or self.lookup_url(host, raw_path)
