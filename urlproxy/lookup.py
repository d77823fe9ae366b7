"""What the proxy does with a request's host and path, from the verified list (sans-I/O).

- The host (or a parent) is a URLHOST entry: the proxy serves it; a path matching a URL entry
  (the Safe Browsing lookup expressions the authority used, via the stop page's matcher) or a
  host under a domain entry goes to the stop page; anything else to the origin.
- Any other host: refused. The proxy is not an open proxy: it carries only the hosts the list
  says carry URL entries.
"""

from __future__ import annotations

import enum
from urllib.parse import parse_qsl

from blocklist.digests import query_digests
from blocklist.state import Kind
from blocklist.sync.verified import VerifiedList
from stoppage.matching import Matcher, canonical_host

# The stop page's own paths, which its notice links to on the blocked host (relative links).
COMPLAINT_PATHS = ("/complaint", "/complaint/status")


class Route(enum.Enum):
    ORIGIN = "origin"
    STOP_PAGE = "stop_page"
    REFUSED = "refused"


class ProxyList:
    """One verified list as the proxy reads it; replaced as a whole when a new one arrives."""

    def __init__(self, verified: VerifiedList | None) -> None:
        self.matcher = Matcher(verified)
        self.serial = self.matcher.serial
        state = self.matcher.state
        self._state = state
        self.urlhosts = state.kinds.count(Kind.URLHOST)
        self._carried: dict[str, bool] = {}

    def carries_urls(self, host: str) -> bool:
        """Is canonical `host`, or a parent, a URLHOST entry?"""
        known = self._carried.get(host)
        if known is not None:
            return known
        state = self._state
        found = False
        for d in query_digests(host):
            i = state.index_of(d)
            if i >= 0 and state.kinds[i] == Kind.URLHOST:
                found = True
                break
        if len(self._carried) >= 4096:
            self._carried.clear()
        self._carried[host] = found
        return found

    def route(self, host_header: str, raw_path: str) -> tuple[Route, str | None]:
        """Where a plain-HTTP request goes, and the canonical host."""
        host = canonical_host(host_header)
        if host is None:
            return Route.REFUSED, None
        if self.matcher.lookup_domain(host) is not None:
            return Route.STOP_PAGE, host  # a stale DNS answer: the whole host is blocked
        if not self.carries_urls(host):
            return Route.REFUSED, host
        if self.matcher.lookup_url(host, raw_path) is not None:
            return Route.STOP_PAGE, host
        return Route.ORIGIN, host

    def complaint_for_listed(self, host: str, path: str, query: str) -> bool:
        """A GET of the stop page's complaint form for a listed path of `host` (the notice
        links to `/complaint?path=<the blocked path>` on the blocked host itself)."""
        if path not in COMPLAINT_PATHS:
            return False
        params = dict(parse_qsl(query, keep_blank_values=True))
        if path == "/complaint/status":  # the notice's footer link, with only its own keys
            return bool(params) and params.keys() <= {"lang", "ticket"}
        listed = params.get("path")
        return listed is not None and self.matcher.lookup_url(host, listed) is not None

    def tls_route(self, server_name: str | None) -> tuple[Route, str | None]:
        """HTTPS: only the name is visible; a host carrying URL entries is spliced to its
        origin unchanged (its paths cannot be checked without interception, which we never do)."""
        host = canonical_host(server_name or "")
        if host is None or not self.carries_urls(host):
            return Route.REFUSED, host
        return Route.ORIGIN, host


def complaint_post(path: str, fields: dict[str, str]) -> bool:
    """A POST of the stop page's own forms (complaint, status lookup), by their field names."""
    if path == "/complaint":
        return {"token", "role", "reason"} <= fields.keys()
    if path == "/complaint/status":
        return {"ticket", "secret"} <= fields.keys()
    return False
