"""URLHOST entries: which hosts carry URL entries, so an enforcement point can divert only those.

A URL entry (host + path) can only be enforced by something that sees the path: the URL proxy.
The resolver sends a host to that proxy only when the list holds a URLHOST entry for it. The
authority derives them at each publication, one per host of an active URL entry:

- value: the host in its canonical domain form, so the digest is SHA-256 of the host name, the
  same digest the resolver already computes for each suffix of a query name (no extra hashing);
- id: URLHOST_ID_BASE + the smallest id of the URL entries on that host: stable while that
  entry lasts, and never the id of an entry an officer created (store ids are far below 2**63);
- none for a host at or below an active domain entry: the domain entry blocks it already, and
  the two digests would collide for the host itself.

A URLHOST entry reveals that a host carries listed URLs (the host digest can be tested against a
guessed name), never which paths: those stay in the URL entries' digests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from blocklist.digests import digest, query_digests
from blocklist.state import ID_SIZE, Entry, Kind, ListState

URLHOST_ID_BASE = 1 << 63


def url_host(value: str) -> str:
    """The host of a canonical URL expression (`host/path`)."""
    return value.partition("/")[0]


def wanted_urlhosts(
    url_entries: Iterable[Entry], is_domain: Callable[[bytes], bool]
) -> dict[bytes, Entry]:
    """The URLHOST entries for `url_entries` (with values), by digest; `is_domain(d)` tells
    whether digest `d` is an active domain entry."""
    lowest: dict[str, int] = {}
    for e in url_entries:
        assert e.kind is Kind.URL and e.value is not None
        host = url_host(e.value)
        if e.entry_id < lowest.get(host, URLHOST_ID_BASE):
            lowest[host] = e.entry_id
    out: dict[bytes, Entry] = {}
    for host, entry_id in lowest.items():
        if any(is_domain(d) for d in query_digests(host)):
            continue
        d = digest(host)
        out[d] = Entry(d, URLHOST_ID_BASE + entry_id, Kind.URLHOST, host)
    return out


def urlhost_change(
    state: ListState,
    removed: Sequence[bytes],
    added: Sequence[Entry],
    url_entries: Iterable[Entry],
) -> tuple[list[bytes], list[Entry]]:
    """`removed` and `added` (a change to `state`, without URLHOST entries) completed with the
    URLHOST entries that make the result carry exactly `wanted_urlhosts(url_entries)`.

    `url_entries` are every URL entry active once the change is applied.
    """
    gone = set(removed)
    new_domains = {e.digest for e in added if e.kind is Kind.DOMAIN}
    domain = int(Kind.DOMAIN)

    def is_domain(d: bytes) -> bool:
        if d in new_domains:
            return True
        i = state.index_of(d)
        return i >= 0 and state.kinds[i] == domain and d not in gone

    wanted = wanted_urlhosts(url_entries, is_domain)
    current: dict[bytes, int] = {}
    kinds = state.kinds
    i = kinds.find(Kind.URLHOST)
    while i >= 0:
        d = state.digests[i * 32 : (i + 1) * 32]
        current[d] = int.from_bytes(state.ids[i * ID_SIZE : (i + 1) * ID_SIZE], "big")
        i = kinds.find(Kind.URLHOST, i + 1)
    out_removed = list(removed)
    out_added = list(added)
    for d, entry_id in current.items():
        want = wanted.get(d)
        if want is None or want.entry_id != entry_id:
            out_removed.append(d)
    for d, e in wanted.items():
        if current.get(d) != e.entry_id:
            out_added.append(e)
    return out_removed, out_added
