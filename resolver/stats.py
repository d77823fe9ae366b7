"""Counters a worker keeps while answering: plain ints in lists and dicts, nothing per query else.

Prometheus objects take a lock per increment; the hot path instead bumps `outcomes[i] += 1`.
`snapshot()` turns the counters into a JSON-able dict (sent from worker processes to the
supervisor), `merge()` adds several up, and resolver.metrics renders the result at scrape time.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from typing import Any

log = logging.getLogger("cordon.resolver")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


# Query outcomes, one counter each (indices into Stats.outcomes).
BLOCKED = 0  # a listed name, answered with the stop page
BLOCKED_CNAME = 1  # an upstream answer whose CNAME chain reached a listed name
CACHED = 2
FORWARDED = 3  # answered from an upstream reply (one fetch may serve coalesced queries too)
SERVFAIL = 4  # every upstream failed, or overload
REFUSED = 5  # client outside the ACL, or a listed name asked in a non-IN class
FORMERR = 6
NOTIMP = 7
BADVERS = 8
DROPPED = 9  # not worth an answer: too short, a response, or ACL set to drop
OUTCOMES = (
    "blocked",
    "blocked_cname",
    "cached",
    "forwarded",
    "servfail",
    "refused",
    "formerr",
    "notimp",
    "badvers",
    "dropped",
)

# Upstream latency histogram bounds, seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

UPSTREAM_ERRORS = ("timeout", "network", "refused", "malformed", "mismatch", "tcp")


class UpstreamStats:
    __slots__ = ("buckets", "errors", "latency_sum", "queries", "skipped", "up")

    def __init__(self) -> None:
        self.queries = 0
        self.errors = dict.fromkeys(UPSTREAM_ERRORS, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last: +Inf
        self.latency_sum = 0.0
        self.up = 1
        self.skipped = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


STREAMS = ("tcp", "dot", "doh")


class StreamStats:
    """Counters of one stream transport (TCP, DNS over TLS, DNS over HTTPS)."""

    __slots__ = ("connections", "errors", "no_sni", "queries", "rejected", "timeouts")

    def __init__(self) -> None:
        self.queries = 0
        self.connections = 0
        self.rejected = 0  # over max_connections
        self.timeouts = 0  # closed idle
        self.errors = 0  # closed for bad framing or an HTTP protocol error
        self.no_sni = 0  # TLS clients that named no server

    def snapshot(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class Stats:
    """One worker's counters. Attributes are bumped directly by the code that knows."""

    def __init__(self, upstreams: list[str], max_entry_labels: int = 10000) -> None:
        self.outcomes = [0] * len(OUTCOMES)
        self.udp = 0
        self.streams = {kind: StreamStats() for kind in STREAMS}
        self.doh_status: dict[int, int] = {}  # DoH requests refused with an HTTP error status
        self.canary = 0  # use-application-dns.net answered NXDOMAIN
        self.tls_expiry = 0.0  # when the DoT/DoH certificate expires (Unix time; 0: none)
        self.truncated = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.coalesced = 0
        self.stale_answers = 0  # expired answers served because every upstream failed
        self.internal_errors = 0  # exceptions caught around a handler: should stay 0
        self.blocked_by_entry: dict[int, int] = {}
        self.blocked_other = 0
        # Log-only mode: what would have been blocked, by entry (bounded like blocked_by_entry).
        self.logged_by_entry: dict[int, int] = {}
        self.logged_other = 0
        self.max_entry_labels = max_entry_labels
        self.upstreams = {name: UpstreamStats() for name in upstreams}
        # Filled by the worker when the list changes, and by the cache on read.
        self.list_serial: int | None = None
        self.list_entries = 0
        self.list_domains = 0
        self.list_verified_at: int | None = None
        self.list_expires: int | None = None
        self.list_swaps = 0
        self.list_last_swap_seconds = 0.0
        self.cache_entries = 0
        self.cache_bytes = 0
        self.cache_evictions = 0
        self.pending = 0
        # URL proxy diversion (resolver.divert): answers given, and the state of this worker.
        self.diverted = 0
        self.divert_hosts = 0  # URLHOST entries in the list in force
        self.divert_proxy_up = 0
        self.divert_active = 0
        self.divert_over_cap = 0
        # The C fast path's engine when it runs: it keeps its own counters, added at snapshot.
        self.fast: Any = None
        # The rate limiter when limits are on: (dropped, slipped) read at snapshot.
        self.limiter: Any = None
        # PROXY v2 trust when on: (refused, errors) read at snapshot.
        self.proxy: Any = None

    @property
    def tcp_connections(self) -> int:
        return self.streams["tcp"].connections

    @property
    def tcp_rejected(self) -> int:
        return self.streams["tcp"].rejected

    def count_blocked(self, entry_id: int) -> None:
        counts = self.blocked_by_entry
        if entry_id in counts:
            counts[entry_id] += 1
        elif len(counts) < self.max_entry_labels:
            counts[entry_id] = 1
        else:
            self.blocked_other += 1

    def count_logged(self, entry_id: int) -> None:
        counts = self.logged_by_entry
        if entry_id in counts:
            counts[entry_id] += 1
        elif len(counts) < self.max_entry_labels:
            counts[entry_id] = 1
        else:
            self.logged_other += 1

    def rate_limited(self) -> tuple[int, int]:
        return self.limiter.counts() if self.limiter is not None else (0, 0)

    def proxy_counts(self) -> tuple[int, int]:
        return self.proxy.counts() if self.proxy is not None else (0, 0)

    def totals(self) -> tuple[list[int], int, int, int]:
        """(outcomes, udp, cache_hits, blocked_other) over both paths."""
        outcomes, udp, hits, other = self.outcomes, self.udp, self.cache_hits, self.blocked_other
        if self.fast is not None:
            c = self.fast.counters()
            outcomes = [a + b for a, b in zip(outcomes, c["outcomes"], strict=True)]
            udp += c["udp"]
            hits += c["cache_hits"]
            other += c["blocked_other"]
        return outcomes, udp, hits, other

    def snapshot(self) -> dict[str, Any]:
        outcomes, udp, cache_hits, blocked_other = self.totals()
        return {
            "outcomes": dict(zip(OUTCOMES, outcomes, strict=True)),
            "transport": {"udp": udp} | {k: v.queries for k, v in self.streams.items()},
            "fast_path": 1 if self.fast is not None else 0,
            "truncated": self.truncated,
            "streams": {k: v.snapshot() for k, v in self.streams.items()},
            "doh_status": {str(k): v for k, v in self.doh_status.items()},
            "canary": self.canary,
            "tls_expiry": self.tls_expiry,
            "cache_hits": cache_hits,
            "cache_misses": self.cache_misses,
            "cache_entries": self.cache_entries,
            "cache_bytes": self.cache_bytes,
            "cache_evictions": self.cache_evictions,
            "coalesced": self.coalesced,
            "ratelimited": dict(zip(("drop", "slip"), self.rate_limited(), strict=True)),
            "proxy": dict(zip(("refused", "errors"), self.proxy_counts(), strict=True)),
            "stale_answers": self.stale_answers,
            "internal_errors": self.internal_errors,
            "pending": self.pending,
            "rss_bytes": rss_bytes(),
            "pid": os.getpid(),
            "blocked_by_entry": {str(k): v for k, v in self.blocked_by_entry.items()},
            "blocked_other": blocked_other,
            "divert": {
                "answers": self.diverted,
                "hosts": self.divert_hosts,
                "proxy_up": self.divert_proxy_up,
                "active": self.divert_active,
                "over_cap": self.divert_over_cap,
            },
            "logged_by_entry": {str(k): v for k, v in self.logged_by_entry.items()},
            "logged_other": self.logged_other,
            "upstreams": {
                name: {
                    "queries": u.queries,
                    "errors": dict(u.errors),
                    "buckets": list(u.buckets),
                    "latency_sum": u.latency_sum,
                    "up": u.up,
                    "skipped": u.skipped,
                }
                for name, u in self.upstreams.items()
            },
            "list": {
                "serial": self.list_serial,
                "entries": self.list_entries,
                "domains": self.list_domains,
                "verified_at": self.list_verified_at,
                "expires": self.list_expires,
                "swaps": self.list_swaps,
                "last_swap_seconds": self.list_last_swap_seconds,
            },
        }


class ErrorReporter:
    """Unexpected exceptions on the hot path: counted always, logged with their traceback at
    most once per `interval` seconds (with how many were not logged), never per query.

    Only the exception is logged, never the query or the client's address.
    """

    __slots__ = ("_last", "_stats", "_suppressed", "interval")

    def __init__(self, stats: Stats, interval: float = 10.0) -> None:
        self._stats = stats
        self.interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def report(self, where: str) -> None:
        """Call from an `except` block."""
        self._stats.internal_errors += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        log.error(
            "unexpected error in %s (%d more not logged since the last report)",
            where,
            self._suppressed,
            exc_info=True,
        )
        self._last = now
        self._suppressed = 0


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        elif isinstance(value, list):
            have = into.setdefault(key, [0] * len(value))
            for i, v in enumerate(value):
                have[i] += v
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Counters summed over workers; list facts from the worker that lags most; `up` = min."""
    total: dict[str, Any] = {}
    lists = [s["list"] for s in snapshots]
    for snap in snapshots:
        _add(total, {k: v for k, v in snap.items() if k not in ("list", "pid")})
    total["per_worker"] = [
        {
            "pid": s.get("pid"),
            "serial": s["list"]["serial"],
            "requests": sum(s["transport"].values()),
        }
        for s in snapshots
    ]
    for name, ups in total.get("upstreams", {}).items():
        ups["up"] = min(s["upstreams"][name]["up"] for s in snapshots)
    loaded = [item for item in lists if item["serial"] is not None]
    if len(loaded) == len(lists) and lists:
        worst = min(loaded, key=lambda item: (item["serial"], item["verified_at"] or 0))
        total["list"] = dict(worst)
    else:
        total["list"] = {
            "serial": None,
            "entries": 0,
            "domains": 0,
            "verified_at": None,
            "expires": None,
        }
    total["list"]["swaps"] = sum(item.get("swaps", 0) for item in lists)
    total["list"]["last_swap_seconds"] = max(
        (item.get("last_swap_seconds", 0.0) for item in lists), default=0.0
    )
    total["tls_expiry"] = min((s.get("tls_expiry", 0.0) for s in snapshots), default=0.0)
    total["workers"] = len(snapshots)
    total["workers_with_list"] = len(loaded)
    return total
