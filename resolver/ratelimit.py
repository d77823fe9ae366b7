"""Per-client rate limiting: a token bucket per client prefix, with RRL-style slip for UDP.

Each client prefix (IPv4 /`ipv4_prefix`, IPv6 /`ipv6_prefix`) has a bucket of `burst` tokens
refilled at `rate` per second; each query takes one. Over the limit, a UDP query is dropped,
except every `slip`-th one, answered with an empty truncated reply (TC=1): a real client retries
over TCP, a spoofed victim of a reflection attack gets nothing larger than the query (the slip
of BIND's response rate limiting). A TCP query over the limit gets REFUSED. At most
`max_clients` buckets are kept; when the table is full and a new client arrives it is emptied
(everyone starts again with a full bucket), so memory is bounded whatever the source addresses.

The limit applies before the ACL and before anything else, to every datagram. This is the
reference; the C fast path has a twin (resolver/_ratelimit.h) that takes the same decisions in
the same floating-point steps, and when it runs, TCP asks the same C buckets (`Engine.limit`),
so a client has one budget across transports.
"""

from __future__ import annotations

import socket
import struct

from resolver.config import RateLimitSection
from resolver.dnswire import Query, parse_query

ALLOW, DROP, SLIP = 0, 1, 2
_HEADER = struct.Struct("!HHHHHH")
_FLAGS_KEPT = 0x7800 | 0x0100 | 0x0010  # opcode, RD, CD
_QR_TC_RA = 0x8000 | 0x0200 | 0x0080


def slip_answer(data: bytes) -> bytes | None:
    """The empty truncated reply to a rate-limited query; None when it does not parse."""
    q = parse_query(data)
    if q.__class__ is not Query:
        return None
    flags = _QR_TC_RA | (q.flags & _FLAGS_KEPT)  # type: ignore[union-attr]
    return _HEADER.pack(q.id, flags, 1, 0, 0, 0) + q.question  # type: ignore[union-attr]


def _mask(prefix: int, bits: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)


class RateLimiter:
    __slots__ = (
        "buckets",
        "burst",
        "dropped",
        "max_clients",
        "rate",
        "slip",
        "slipped",
        "v4_mask",
        "v6_mask",
    )

    def __init__(self, config: RateLimitSection) -> None:
        self.rate = float(config.rate)
        self.burst = float(config.burst)
        self.slip = config.slip
        self.max_clients = config.max_clients
        self.v4_mask = _mask(config.ipv4_prefix, 32)
        self.v6_mask = _mask(config.ipv6_prefix, 128)
        self.buckets: dict[int, list] = {}
        self.dropped = 0
        self.slipped = 0

    def key(self, host: str) -> int | None:
        """A client's bucket: its masked address (IPv6 keys are set apart by a high bit)."""
        try:
            if ":" in host:
                packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                return (1 << 128) | (int.from_bytes(packed, "big") & self.v6_mask)
            return int.from_bytes(socket.inet_aton(host), "big") & self.v4_mask
        except OSError:
            return None

    def check(self, host: str, now: float) -> int:
        """ALLOW, DROP or SLIP for one query from `host` at monotonic time `now`."""
        key = self.key(host)
        if key is None:
            return ALLOW
        buckets = self.buckets
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= self.max_clients:
                buckets.clear()
            b = buckets[key] = [self.burst, now, 0]
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return ALLOW
        b[0] = tokens
        b[2] += 1
        if self.slip and b[2] % self.slip == 0:
            self.slipped += 1
            return SLIP
        self.dropped += 1
        return DROP

    def counts(self) -> tuple[int, int]:
        return self.dropped, self.slipped


class FastLimiter:
    """The C engine's buckets, for TCP queries when the fast path runs (one budget per client)."""

    __slots__ = ("check", "engine")

    def __init__(self, engine) -> None:
        self.engine = engine
        self.check = engine.limit

    def counts(self) -> tuple[int, int]:
        return self.engine.ratelimit_counts()


def make_limiter(config: RateLimitSection, engine=None) -> RateLimiter | FastLimiter | None:
    if not config.enabled:
        if engine is not None:
            engine.set_ratelimit(None)
        return None
    if engine is None:
        return RateLimiter(config)
    engine.set_ratelimit(
        float(config.rate),
        float(config.burst),
        config.ipv4_prefix,
        config.ipv6_prefix,
        config.slip,
        config.max_clients,
    )
    return FastLimiter(engine)
