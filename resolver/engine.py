"""The per-query decision, independent of transports: refuse, block, answer from cache, or forward.

`handle()` is synchronous and answers everything that needs no upstream: malformed queries,
clients outside the ACL, cache hits and listed names. Over UDP, the answer to a query whose bytes
(after the id) were seen before is remembered: a listed name's answer for as long as the list
is in force, a cached answer until its TTLs tick down by a second. Such a repeat costs one dict
lookup and one concatenation, without parsing. It returns the response bytes, None to
drop, or the parsed `Query` to pass to `forward()`, the only coroutine, which coalesces identical
in-flight queries, asks the upstreams, caches the reply and blocks a CNAME chain that reaches a
listed name. The list in force is one reference (`self.lists`) replaced by `set_list`.
"""

from __future__ import annotations

import asyncio
import time

from resolver import stats as S
from resolver.cache import CacheEntry, ResponseCache, clamp_ttls
from resolver.config import ResolverConfig
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
from resolver.matcher import Matcher
from resolver.stats import Stats
from resolver.upstream import Upstreams

_ERROR_OUTCOME = {FORMERR: S.FORMERR, NOTIMP: S.NOTIMP, BADVERS: S.BADVERS}
MEMO_MAX = 16384  # remembered answers (emptied when full): a few MB at most
MEMO_MAX_QUERY = 300  # longer queries (cookies, padding) are not worth remembering
_FOREVER = float("inf")
_EDE_TEXT = {
    EDE_NETWORK_ERROR: b"upstream resolvers failed",
    22: b"no upstream resolver answered",
}


class ListInForce:
    """What a swap replaces at once: the matcher, the answers for listed names, a generation."""

    __slots__ = ("answers", "gen", "loaded", "matcher", "serial")

    def __init__(
        self, matcher: Matcher, answers: BlockedAnswers, gen: int, serial: int | None
    ) -> None:
        self.matcher = matcher
        self.answers = answers
        self.gen = gen
        self.serial = serial
        self.loaded = serial is not None


class Resolver:
    def __init__(self, config: ResolverConfig, stats: Stats, answers: BlockedAnswers) -> None:
        self.config = config
        self.stats = stats
        self.lists = ListInForce(Matcher.empty(), answers, 0, None)
        c = config.cache
        self.cache = ResponseCache(c.max_entries, c.max_bytes)
        self.upstreams = Upstreams(config.upstream, stats)
        self.inflight: dict[bytes, asyncio.Future] = {}
        self.max_pending = config.server.max_pending
        self.servfail_without_list = config.server.without_list == "servfail"
        self.refuse = config.acl.refused == "refuse"
        # query bytes after the id -> (answer after the id, outcome, entry id or -1,
        #                              counted as a cache hit, list generation, valid until)
        self.memo: dict[bytes, tuple[bytes, int, int, bool, int, float]] = {}

    def set_list(self, matcher: Matcher, answers: BlockedAnswers, serial: int) -> None:
        self.lists = ListInForce(matcher, answers, self.lists.gen + 1, serial)
        self.memo = {}

    def _remember(
        self,
        data: bytes,
        resp: bytes,
        outcome: int,
        entry_id: int,
        cache_hit: bool,
        gen: int,
        until: float,
    ) -> None:
        if len(data) > MEMO_MAX_QUERY:
            return
        memo = self.memo
        if len(memo) >= MEMO_MAX:
            memo.clear()
        memo[data[2:]] = (resp[2:], outcome, entry_id, cache_hit, gen, until)

    # ------------------------------------------------------------------ synchronous part

    def handle(self, data: bytes, allowed: bool, udp: bool) -> bytes | Query | None:
        """Response bytes, None (drop), or the Query to forward. Never raises on bad input."""
        stats = self.stats
        if udp and allowed:
            seen = self.memo.get(data[2:])
            if seen is not None and seen[4] == self.lists.gen and time.monotonic() < seen[5]:
                stats.outcomes[seen[1]] += 1
                if seen[2] >= 0:
                    stats.count_blocked(seen[2])
                if seen[3]:
                    stats.cache_hits += 1
                return data[:2] + seen[0]
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
        now = time.monotonic()
        entry = self.cache.get(cache_key(q), now)
        if entry is not None:
            stats.cache_hits += 1
            if entry.gen != lists.gen:
                self._recheck(q, entry, lists)
            if entry.blocked >= 0:
                resp = self._blocked(q, entry.blocked, entry.via_cname, lists, udp)
                if udp:
                    outcome = S.BLOCKED_CNAME if entry.via_cname else S.BLOCKED
                    until = entry.expires
                    self._remember(data, resp, outcome, entry.blocked, True, lists.gen, until)
                return resp
            stats.outcomes[S.CACHED] += 1
            resp = self._from_entry(q, entry, udp)
            if udp:
                # Valid until the TTLs tick down by one more second, or the entry expires.
                until = min(entry.expires, entry.stored + int(now - entry.stored) + 1)
                self._remember(data, resp, S.CACHED, -1, True, lists.gen, until)
            return resp
        entry_id = lists.matcher.match(q.qname)
        if entry_id >= 0:
            resp = self._blocked(q, entry_id, False, lists, udp)
            if udp:
                self._remember(data, resp, S.BLOCKED, entry_id, False, lists.gen, _FOREVER)
            return resp
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

    def _from_entry(self, q: Query, entry: CacheEntry, udp: bool) -> bytes:
        age = int(time.monotonic() - entry.stored)
        resp = rewrite_response(entry.data, entry.info, q.id, q.question, age, keep_opt=q.edns)
        if udp and len(resp) > q.udp_size:
            self.stats.truncated += 1
            return truncate_for_udp(resp, q.udp_size)
        return resp

    # ------------------------------------------------------------------ forwarding

    async def forward(self, q: Query, udp: bool) -> bytes:
        """The answer to a query `handle` passed on: from an upstream, or SERVFAIL."""
        stats = self.stats
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
                stats.internal_errors += 1
            finally:
                stats.pending -= 1
                del self.inflight[key]
                fut.set_result(result)
        if result.__class__ is int:
            stats.outcomes[S.SERVFAIL] += 1
            return response_for(q, SERVFAIL, ede_code=result, ede_text=_EDE_TEXT.get(result, b""))  # type: ignore[arg-type]
        entry: CacheEntry = result  # type: ignore[assignment]
        lists = self.lists
        if entry.gen != lists.gen:  # the list changed while we waited
            self._recheck(q, entry, lists)
        if entry.blocked >= 0:
            return self._blocked(q, entry.blocked, entry.via_cname, lists, udp)
        stats.outcomes[S.FORWARDED] += 1
        return self._from_entry(q, entry, udp)

    async def _fetch(self, q: Query, key: bytes) -> CacheEntry | int:
        result = await self.upstreams.resolve(q)
        if result.__class__ is int:
            return result  # type: ignore[return-value]
        data, info = result  # type: ignore[misc]
        lists = self.lists
        names = tuple({*info.answer_owners, *info.cname_targets} - {q.qname})
        blocked = lists.matcher.match_any(names) if names else -1
        now = time.monotonic()
        lifetime = self._lifetime(info)
        if lifetime > 0:
            data = clamp_ttls(data, info, lifetime, self.config.cache.min_ttl)
        entry = CacheEntry(data, info, now, now + lifetime, names, lists.gen, blocked, blocked >= 0)
        if lifetime > 0:
            self.cache.put(key, entry)
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
