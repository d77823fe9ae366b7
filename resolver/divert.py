"""Diverting the hosts that carry URL entries to the URL proxy (design §10, docs/urlproxy.md).

The list names those hosts by URLHOST entries: the digest of the host name, the same digest the
matcher computes for each suffix of a query name. A query is diverted when it asks class IN for
an address type (A, AAAA, ANY) or for HTTPS/SVCB (whose hints could bypass the proxy), a suffix
of its name is a URLHOST digest, no suffix is a protected name, and no domain entry blocks it
(the engine checks that first). The answer is the proxy's address with a short TTL, built like a
stop-page answer (same wire code; EDE 4 + 16 say it is not the origin's address). Any other
type (MX, TXT, ...) of a diverted host is forwarded as usual.

A `Diversion` exists only while the proxy reports healthy and the list holds no more URLHOST
entries than the cap; otherwise the resolver forwards those hosts (fail open: a dead proxy must
never take shared hosts down). It is immutable and swapped with the list in force.
"""

from __future__ import annotations

from blocklist.digests import DIGEST_SIZE, name_suffix_digests, query_digests
from blocklist.domains import canonical_domain
from blocklist.state import Kind, ListState
from resolver.dnswire import TYPE_A, TYPE_AAAA, TYPE_ANY, BlockedAnswers

TYPE_SVCB = 64
TYPE_HTTPS = 65
DIVERTED_TYPES = frozenset((TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_SVCB, TYPE_HTTPS))
CLASS_IN = 1


def urlhost_digests(state: ListState) -> frozenset[bytes]:
    """Digests of the list's URLHOST entries."""
    kinds, digests = state.kinds, state.digests
    out = []
    i = kinds.find(Kind.URLHOST)
    while i >= 0:
        out.append(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
        i = kinds.find(Kind.URLHOST, i + 1)
    return frozenset(out)


def protected_digests(names: list[str]) -> frozenset[bytes]:
    """Digests of the protected names: a query at or below one is never diverted."""
    return frozenset(query_digests(canonical_domain(n))[0] for n in names)


class Diversion:
    __slots__ = ("answers", "hosts", "protected")

    def __init__(
        self, hosts: frozenset[bytes], protected: frozenset[bytes], answers: BlockedAnswers
    ) -> None:
        self.hosts = hosts
        self.protected = protected
        self.answers = answers

    def diverts(self, qname: bytes, qtype: int, qclass: int) -> bool:
        if qtype not in DIVERTED_TYPES or qclass != CLASS_IN or not qname:
            return False
        hit = False
        hosts, protected = self.hosts, self.protected
        for d in name_suffix_digests(qname):
            if d in protected:
                return False
            hit = hit or d in hosts
        return hit
