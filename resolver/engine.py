"""The per-query decision, independent of transports: refuse, block, answer from cache, or forward.

`handle()` is synchronous and answers everything that needs no upstream: malformed queries,
clients outside the ACL, cache hits and listed names. It returns the response bytes, None to
drop, or the parsed `Query` to pass to `forward()`, the only coroutine, which coalesces identical
in-flight queries, asks the upstreams, caches the reply and blocks a CNAME chain that reaches a
listed name. The list in force is one reference (`self.lists`) replaced by `set_list`.

This is the reference path. When the C fast path is built (resolver.fastpath), UDP queries are
answered by it first, from the same cache and the same list (the engine below is then also the
cache), and only what it hands back comes here; tests require both paths to give the same bytes.
The cache is keyed on the normalized question (`cache_key`), so a repeat with another id, case,
cookie or padding is a hit.
"""

from __future__ import annotations

import asyncio
import time

from blocklist.state import ListState
from resolver import fastpath
from resolver import stats as S
from resolver.cache import CacheEntry, ResponseCache, clamp_ttls
from resolver.canary import CANARY, canary_answer
from resolver.config import ResolverConfig
from resolver.divert import Diversion
from resolver.dnswire import (
    BADVERS,
    EDE_NETWORK_ERROR,
    EDE_PROHIBITED,
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    BlockedAnswers,
    Query,
    ResponseInfo,
    cache_key,
    error_response,
    parse_query,
    response_for,
    rewrite_response,
    truncate_for_udp,
)
from resolver.exemptions import ExemptingMatcher, Exemptions
from resolver.matcher import Matcher
from resolver.proxyv2 import make_trust
from resolver.ratelimit import make_limiter
from resolver.stale import StaleStore
from resolver.stats import ErrorReporter, Stats
from resolver.zones import ZoneRouter

_ERROR_OUTCOME = {FORMERR: S.FORMERR, NOTIMP: S.NOTIMP, BADVERS: S.BADVERS}
_EDE_TEXT = {
    EDE_NETWORK_ERROR: b"upstream resolvers failed",
    22: b"no upstream resolver answered",
}


class ListInForce:
    """What a swap replaces at once: the matcher, the answers for listed names, a generation.

    On the fast path `index` is the C `ListIndex` (same `match`/`match_any` interface);
    `matcher` is the index, or the index seen through the local exemptions.
    """

    __slots__ = ("answers", "divert", "exemptions", "gen", "index", "loaded", "matcher", "serial")

    def __init__(
        self,
        index: Matcher,
        answers: BlockedAnswers,
        gen: int,
        serial: int | None,
        exemptions: Exemptions | None = None,
        divert: Diversion | None = None,
    ) -> None:
        self.index = index
        self.exemptions = exemptions or Exemptions.empty()
        exempting = exemptions is not None and exemptions.by_entry
        self.matcher = ExemptingMatcher(index, exemptions) if exempting else index
        self.answers = answers
        self.gen = gen
        self.serial = serial
        self.loaded = serial is not None
        self.divert = divert  # set only while the URL proxy is healthy (resolver.divert)


class Resolver:
    def __init__(
        self,
        config: ResolverConfig,
        stats: Stats,
        answers: BlockedAnswers,
        *,
        fast: bool | None = None,
    ) -> None:
        """`fast`: use the C fast path (default: when built and `server.fast_path` is on)."""
        self.config = config
        self.stats = stats
        self.errors = ErrorReporter(stats)
        c = config.cache
        if fast is None:
            fast = config.server.fast_path and fastpath.available()
        self.fast = fastpath.engine(c.max_entries, c.max_bytes) if fast else None
        self.cache: ResponseCache = self.fast if fast else ResponseCache(c.max_entries, c.max_bytes)
        self.servfail_without_list = config.server.without_list == "servfail"
        # Log-only rollout: a listed name is answered as if it were not, and counted.
        self.log_only = config.blocking.mode == "log-only"
        self.refuse = config.acl.refused == "refuse"
        empty = fastpath.list_index(ListState.empty()) if fast else Matcher.empty()
        self.lists = ListInForce(empty, answers, 0, None)
        if self.fast is not None:
            stats.fast = self.fast
            self.fast.set_stats(
                stats.blocked_by_entry, stats.max_entry_labels, self.servfail_without_list
            )
            self.fast.set_acl([], [], self.refuse)  # networks: set by the UDP server
            self._push_list()
        self.router = ZoneRouter(config.upstream, stats)
        self.upstreams = self.router.default
        self.stale = (
            StaleStore(c.stale_max_age, c.stale_answer_ttl, c.max_entries, c.max_bytes)
            if c.stale_max_age
            else None
        )
        # Per-client rate limits (None: off); on the fast path, the C engine's buckets.
        self.limiter = make_limiter(config.ratelimit, self.fast)
        stats.limiter = self.limiter
        # PROXY v2 senders (None: headers refused from everyone); UDP ones checked in C too.
        self.proxy = make_trust(config.proxy.trusted, self.fast)
        stats.proxy = self.proxy
        self.inflight: dict[bytes, asyncio.Future] = {}
        self.max_pending = config.server.max_pending
        self.canary = config.server.doh_canary

    @staticmethod
    def now() -> float:
        """The clock of cache lifetimes (CLOCK_MONOTONIC, which the C path is handed too)."""
        return time.monotonic()

    @property
    def path(self) -> str:
        return "c" if self.fast is not None else "python"

    def set_list(
        self,
        matcher: Matcher,
        answers: BlockedAnswers,
        serial: int,
        exemptions: Exemptions | None = None,
    ) -> None:
        """Swap the list in force (one reference; the C engine takes it in the same step)."""
        if self.fast is not None and not fastpath.is_index(matcher):
            matcher = fastpath.index_of(matcher)
        lists = self.lists
        self.lists = ListInForce(
            matcher, answers, lists.gen + 1, serial, exemptions, divert=lists.divert
        )
        if self.fast is not None:
            self._push_list()

    def set_divert(self, divert: Diversion | None) -> None:
        """Start or stop diverting URLHOST names. A new generation, so cached answers are
        re-checked (the C path hands a diverted name to Python instead of answering it)."""
        lists = self.lists
        self.lists = ListInForce(
            lists.index, lists.answers, lists.gen + 1, lists.serial, lists.exemptions, divert
        )
        if self.fast is not None:
            self._push_list()

    def _push_list(self) -> None:
        lists = self.lists
        answers = lists.answers
        fast = self.fast
        fast.set_list(  # type: ignore[union-attr]
            lists.index,
            lists.gen,
            lists.loaded,
            answers.variants,
            answers.text,
            lists.divert is not None,
        )
        # Blocks that are not plain blocks are decided here, in Python, never differently in C.
        fast.set_punt(lists.exemptions.entry_ids, self.log_only)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ synchronous part

    def handle_passed(
        self, reason: int, item: bytes | Query, allowed: bool
    ) -> bytes | Query | None:
        """`handle` for what the C path passed back: `fastpath.MISS` with the parsed `Query` (it
        was found neither cached nor listed, so only the count remains), else the datagram."""
        if reason == fastpath.MISS:
            self.stats.cache_misses += 1
            return item if item.__class__ is Query else parse_query(item)  # type: ignore[arg-type,return-value]
        return self.handle(item, allowed, True)  # type: ignore[arg-type]

    def answer_udp(self, data: bytes, allowed: bool, now: float) -> bytes | Query | None:
        """What the UDP loop does with one datagram: C first when it runs, else `handle`."""
        if self.fast is None:
            return self.handle(data, allowed, True)
        result = self.fast.answer(data, allowed, now)
        if result.__class__ is int:
            return self.handle_passed(result, data, allowed)
        if result.__class__ is Query:
            return self.handle_passed(fastpath.MISS, result, allowed)
        return result

    def handle(self, data: bytes, allowed: bool, udp: bool) -> bytes | Query | None:
        """Response bytes, None (drop), or the Query to forward. Never raises on bad input."""
        stats = self.stats
        query = parse_query(data)
        if query.__class__ is not Query:
            if query is None or not allowed:
                stats.outcomes[S.DROPPED] += 1
                return None
            stats.outcomes[_ERROR_OUTCOME.get(query, S.FORMERR)] += 1  # type: ignore[call-overload]
            return error_response(data, query)  # type: ignore[arg-type]
        if not allowed:
            if not self.refuse:
                stats.outcomes[S.DROPPED] += 1
                return None
            stats.outcomes[S.REFUSED] += 1
            return response_for(query, REFUSED, ede_code=EDE_PROHIBITED)  # type: ignore[arg-type]
        q: Query = query  # type: ignore[assignment]
        lists = self.lists
        divert = lists.divert
        if (
            divert is not None
            and divert.diverts(q.qname, q.qtype, q.qclass)
            and lists.matcher.match(q.qname) < 0
        ):
            return self._diverted(q, divert, udp)
        now = time.monotonic()
        entry = self.cache.get(cache_key(q), now)
        if entry is not None:
            stats.cache_hits += 1
            if entry.gen != lists.gen:
                self._recheck(q, entry, lists)
            if entry.blocked >= 0:
                if not self.log_only:
                    return self._blocked(q, entry.blocked, entry.via_cname, lists, udp)
                stats.count_logged(entry.blocked)
            stats.outcomes[S.CACHED] += 1
            return self._from_entry(q, entry, udp, now)
        entry_id = lists.matcher.match(q.qname)
        if entry_id >= 0:
            if not self.log_only:
                return self._blocked(q, entry_id, False, lists, udp)
            stats.count_logged(entry_id)
        if not lists.loaded and self.servfail_without_list:
            stats.outcomes[S.SERVFAIL] += 1
            return response_for(q, SERVFAIL, ede_code=EDE_NETWORK_ERROR, ede_text=b"no list")
        stats.cache_misses += 1
        return q

    def _blocked(
        self, q: Query, entry_id: int, via_cname: bool, lists: ListInForce, udp: bool
    ) -> bytes:
        stats = self.stats
        stats.outcomes[S.BLOCKED_CNAME if via_cname else S.BLOCKED] += 1
        stats.count_blocked(entry_id)
        resp = lists.answers.build(q)
        if udp and len(resp) > q.udp_size:
            stats.truncated += 1
            return truncate_for_udp(resp, q.udp_size)
        return resp

    def _diverted(self, q: Query, divert: Diversion, udp: bool) -> bytes:
        self.stats.diverted += 1
        resp = divert.answers.build(q)
        if udp and len(resp) > q.udp_size:
            self.stats.truncated += 1
            return truncate_for_udp(resp, q.udp_size)
        return resp

    def _recheck(self, q: Query, entry: CacheEntry, lists: ListInForce) -> None:
        """Re-evaluate a cached reply against a list that changed since it was stored."""
        matcher = lists.matcher
        blocked = matcher.match(q.qname)
        via_cname = False
        if blocked < 0 and entry.names:
            blocked = matcher.match_any(entry.names)
            via_cname = blocked >= 0
        entry.blocked = blocked
        entry.via_cname = via_cname
        entry.gen = lists.gen

    def _from_entry(self, q: Query, entry: CacheEntry, udp: bool, now: float) -> bytes:
        age = int(now - entry.stored)
        resp = rewrite_response(entry.data, entry.info, q.id, q.question, age, keep_opt=q.edns)
        if udp and len(resp) > q.udp_size:
            self.stats.truncated += 1
            return truncate_for_udp(resp, q.udp_size)
        return resp

    # ------------------------------------------------------------------ forwarding

    async def forward(self, q: Query, udp: bool) -> bytes:
        """The answer to a query `handle` passed on: from an upstream, or SERVFAIL."""
        stats = self.stats
        if self.canary and q.qname == CANARY:  # misses only: never cached, so always here
            stats.canary += 1
            return canary_answer(q)  # type: ignore[return-value]
        key = cache_key(q)
        fut = self.inflight.get(key)
        if fut is not None:
            stats.coalesced += 1
            result = await asyncio.shield(fut)
        elif stats.pending >= self.max_pending:
            result = EDE_NETWORK_ERROR
        else:
            fut = asyncio.get_running_loop().create_future()
            self.inflight[key] = fut
            stats.pending += 1
            result: CacheEntry | int = EDE_NETWORK_ERROR
            try:
                result = await self._fetch(q, key)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors.report("forward")
            finally:
                stats.pending -= 1
                del self.inflight[key]
                fut.set_result(result)
        stale = None
        if self.stale is not None and (
            result.__class__ is int or result.info.rcode == SERVFAIL  # type: ignore[union-attr]
        ):
            stale = self.stale.get(key, time.monotonic())
            if stale is not None:
                result = stale
        if result.__class__ is int:
            stats.outcomes[S.SERVFAIL] += 1
            return response_for(q, SERVFAIL, ede_code=result, ede_text=_EDE_TEXT.get(result, b""))  # type: ignore[arg-type]
        entry: CacheEntry = result  # type: ignore[assignment]
        lists = self.lists
        if entry.gen != lists.gen:  # the list changed while we waited
            self._recheck(q, entry, lists)
        if entry.blocked >= 0:
            if not self.log_only:
                return self._blocked(q, entry.blocked, entry.via_cname, lists, udp)
            if entry.via_cname:  # a listed query name was counted by `handle` already
                stats.count_logged(entry.blocked)
        if stale is not None:
            stats.outcomes[S.CACHED] += 1
            stats.stale_answers += 1
            resp = self.stale.answer(q, stale)  # type: ignore[union-attr]
            if udp and len(resp) > q.udp_size:
                stats.truncated += 1
                return truncate_for_udp(resp, q.udp_size)
            return resp
        stats.outcomes[S.FORWARDED] += 1
        return self._from_entry(q, entry, udp, time.monotonic())

    async def _fetch(self, q: Query, key: bytes) -> CacheEntry | int:
        result = await self.router.select(q.qname).resolve(q)
        if result.__class__ is int:
            return result  # type: ignore[return-value]
        data, info = result  # type: ignore[misc]
        return self.store(q, key, data, info, time.monotonic())

    def store(
        self, q: Query, key: bytes, data: bytes, info: ResponseInfo, now: float
    ) -> CacheEntry:
        """The cache entry for an upstream reply to `q`, cached when its lifetime allows."""
        lists = self.lists
        names = tuple({*info.answer_owners, *info.cname_targets} - {q.qname})
        # Log-only forwards listed names too: their cache entries must still say so.
        blocked = lists.matcher.match(q.qname) if self.log_only else -1
        via_cname = False
        if blocked < 0 and names:
            blocked = lists.matcher.match_any(names)
            via_cname = blocked >= 0
        lifetime = self._lifetime(info)
        if lifetime > 0:
            data = clamp_ttls(data, info, lifetime, self.config.cache.min_ttl)
        gen = lists.gen
        divert = lists.divert
        if divert is not None and divert.diverts(q.qname, q.qtype, q.qclass):
            # Asked before diverting began: a stale generation makes the first hit re-check it
            # (and the C path hand it to Python), so the cache never answers a diverted name.
            gen = -1
        entry = CacheEntry(data, info, now, now + lifetime, names, gen, blocked, via_cname)
        if lifetime > 0:
            self.cache.put(key, entry)
            if self.stale is not None:
                self.stale.put(key, entry)
            self.stats.cache_entries = len(self.cache)
            self.stats.cache_bytes = self.cache.bytes
            self.stats.cache_evictions = self.cache.evictions
        return entry

    def _lifetime(self, info: ResponseInfo) -> int:
        """Seconds to cache a reply: 0 = not at all."""
        c = self.config.cache
        if info.tc:
            return 0
        if info.rcode == SERVFAIL:
            return c.servfail_ttl
        if info.rcode not in (NOERROR, NXDOMAIN) or info.ttl is None:
            return 0
        ttl = info.ttl
        cap = c.negative_max_ttl if info.negative else c.max_ttl
        return max(c.min_ttl, min(ttl, cap)) if cap else 0
