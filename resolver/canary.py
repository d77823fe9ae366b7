"""The application DNS canary: `use-application-dns.net` answered NXDOMAIN.

A browser that would enable its own DNS over HTTPS by default (Firefox) first asks the system
resolver for this name; NXDOMAIN (or no address) tells it the network asks it not to, so its
queries keep going through the ASP's resolver, and the list. Only the name itself is answered;
names below it are resolved as usual. The C fast path hands this name over as a cache miss:
it is answered before any upstream query and never cached, so it is always decided here.
"""

from __future__ import annotations

from resolver.dnswire import NXDOMAIN, Query, response_for

CANARY = b"use-application-dns.net"


def canary_answer(query: Query) -> bytes | None:
    """NXDOMAIN for the canary name (any type), else None."""
    if query.qname != CANARY:
        return None
    return response_for(query, NXDOMAIN)
