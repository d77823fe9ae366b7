"""The compiled UDP fast path (resolver/_fastpath.c), when it was built, and how to feed it.

`resolver serve` answers UDP queries in C when the extension imports and `server.fast_path` is
on: the C loop owns recvmmsg/sendmmsg and answers listed names, cache hits, ACL refusals and
malformed queries itself; misses, TCP and anything unusual go through the pure-Python path in
resolver.engine, which stays the reference (tests require both to give identical bytes).
"""

from __future__ import annotations

from typing import Any

from blocklist.state import ListState
from resolver.acl import Acl
from resolver.dnswire import Query

try:
    from resolver import _fastpath as _ext
except ImportError as exc:  # no compiler or headers at install time, or another platform
    _ext = None
    UNAVAILABLE: str | None = f"resolver._fastpath is not built ({exc})"
else:
    UNAVAILABLE = None
    _ext.set_query_type(Query)  # misses come back parsed, as parse_query would return them

PUNT = 2  # Python handles the datagram from the start
MISS = 3  # parsed (a Query), not cached, not listed: Python forwards it
UNSENT = 4  # an answer the socket had no room for: Python queues it


def available() -> bool:
    return _ext is not None


def engine(max_entries: int, max_bytes: int) -> Any:
    """A C engine: response cache (the ResponseCache interface), list in force, batch loop."""
    assert _ext is not None, UNAVAILABLE
    return _ext.Engine(max_entries, max_bytes)


def list_index(state: ListState) -> Any:
    """The C lookup index over `state`'s packed columns (no copy; the Matcher interface)."""
    assert _ext is not None, UNAVAILABLE
    return _ext.ListIndex(state.digests, state.ids, state.kinds)


def index_of(matcher: Any) -> Any:
    """The C index over the same columns as a pure-Python `Matcher`."""
    assert _ext is not None, UNAVAILABLE
    return _ext.ListIndex(matcher._digests, matcher._ids, matcher._kinds)


def is_index(matcher: object) -> bool:
    return _ext is not None and isinstance(matcher, _ext.ListIndex)


def acl_networks(acl: Acl) -> tuple[list[tuple[int, int]], list[tuple[bytes, int]]]:
    """The ACL's networks in the form `Engine.set_acl` takes."""
    v4 = [(int(n.network_address), n.prefixlen) for n in acl.networks(4)]
    v6 = [(n.network_address.packed, n.prefixlen) for n in acl.networks(6)]
    return v4, v6
