"""Hosts carrying URL entries (URLHOST entries) are diverted to the URL proxy, and only while the
proxy reports healthy; the C fast path and the pure-Python path give identical bytes for them.

Placeholder names only. The health endpoint is a real HTTP server on loopback whose answer the
test switches; the resolver is the real service on a loopback port, asked with dnspython.
"""

from __future__ import annotations

import asyncio
import contextlib

import dns.rcode
import pytest
from aiohttp import web
from resolver_fixtures import (
    AUTHORITY,
    FakeUpstream,
    addresses,
    ask,
    make_config,
    running,
    write_state,
)
from test_resolver_fastpath import (
    NAMES,
    NOW,
    REPLIES,
    Pair,
    client_query,
    corpus,
    edns_variants,
)

from blocklist.state import Entry, Kind, ListState
from resolver import fastpath
from resolver.divert import Diversion, protected_digests, urlhost_digests
from resolver.dnswire import Query, parse_query
from resolver.matcher import Matcher
from resolver.service import make_answers, make_divert_answers

PROXY_V4 = "192.0.2.44"
ORIGIN_V4 = "198.51.100.9"
PROXY = {"ipv4": PROXY_V4, "health_interval": 0.05, "health_timeout": 0.5}


def divert_state(
    domains: list[str], urlhosts: list[str], urls: list[str] = (), first_id: int = 1
) -> ListState:
    entries = [Entry.from_value(v, first_id + i, Kind.DOMAIN) for i, v in enumerate(domains)]
    n = len(entries) + first_id
    entries += [Entry.from_value(v, n + i, Kind.URL) for i, v in enumerate(urls)]
    n += len(urls)
    entries += [
        Entry.from_value(v, (1 << 63) + n + i, Kind.URLHOST) for i, v in enumerate(urlhosts)
    ]
    return ListState.from_entries(entries)


# ---------------------------------------------------------------------------------------------
# C fast path vs Python: identical bytes for diverted names, cached or not, before and after


DIVERTED = ["allowed.example", "shared.example", "x.blocked.example", "www.protected.example"]
EXTRA_NAMES = ["shared.example", "www.shared.example", "x.blocked.example", "www.protected.example"]


@pytest.mark.skipif(not fastpath.available(), reason=str(fastpath.UNAVAILABLE))
def test_fast_path_gives_the_reference_bytes_for_diverted_hosts(tmp_path, clock):
    pair = Pair(tmp_path, url_proxy=PROXY, rails={"protected_names": ["protected.example"]})
    state = divert_state(["blocked.example", "deep.other.example"], DIVERTED)
    answers = make_answers(pair.config.blocking, AUTHORITY, 1)
    pair.pure.set_list(Matcher(state), answers, 1)
    pair.fast.set_list(fastpath.list_index(state), answers, 1)
    for query_wire, reply in REPLIES:  # allowed.example is cached before it is diverted
        pair.store(query_wire, reply)
    extra = [
        client_query(name, rdtype, **variant)
        for name in EXTRA_NAMES
        for rdtype in ("A", "AAAA", "MX", "HTTPS", "SVCB", "ANY", "TXT")
        for variant in edns_variants()
    ]
    packets = corpus() + extra
    pair.compare(packets, True)  # not diverting yet (proxy not healthy)

    divert = Diversion(
        urlhost_digests(state),
        protected_digests(["protected.example"]),
        make_divert_answers(pair.config.url_proxy, pair.config.blocking),
    )
    for r in (pair.pure, pair.fast):
        r.set_divert(divert)
    pair.passed.clear()
    pair.compare(packets, True)
    assert pair.pure.stats.diverted == pair.fast.stats.diverted > 0

    # What was diverted: address types of URLHOST names (and below), never a protected name,
    # never a name a domain entry blocks, never another type.
    for packet in packets:
        q = parse_query(packet)
        if not isinstance(q, Query) or q.qtype != 1 or q.qclass != 1:
            continue
        resp = pair.pure.handle(packet, True, True)
        assert pair.fast.answer_udp(packet, True, NOW) == resp  # both counted alike
        if q.qname in (b"allowed.example", b"shared.example", b"www.shared.example"):
            assert isinstance(resp, bytes) and bytes([192, 0, 2, 44]) in resp, q.qname
            assert not pair.in_c[packet]  # C handed it to Python, even when cached
        if q.qname in (b"x.blocked.example", b"www.protected.example"):
            assert not (isinstance(resp, bytes) and bytes([192, 0, 2, 44]) in resp), q.qname

    for r in (pair.pure, pair.fast):  # the proxy fails: cached answers are served again
        r.set_divert(None)
    pair.passed.clear()
    pair.compare(packets, True)
    allowed_a = [p for p in packets if p[12:33] == b"\x07allowed\x07example\x00\x00\x01\x00\x01"]
    assert allowed_a and any(pair.in_c[p] for p in allowed_a)  # the cached answer, from C again


@pytest.mark.skipif(not fastpath.available(), reason=str(fastpath.UNAVAILABLE))
def test_an_answer_fetched_before_diverting_is_not_served_from_the_cache(tmp_path, clock):
    pair = Pair(tmp_path, url_proxy=PROXY)
    state = divert_state([], ["allowed.example"])
    answers = make_answers(pair.config.blocking, AUTHORITY, 1)
    pair.pure.set_list(Matcher(state), answers, 1)
    pair.fast.set_list(fastpath.list_index(state), answers, 1)
    divert = Diversion(
        urlhost_digests(state),
        frozenset(),
        make_divert_answers(pair.config.url_proxy, pair.config.blocking),
    )
    for r in (pair.pure, pair.fast):
        r.set_divert(divert)
    for query_wire, reply in REPLIES:  # upstream replies that arrive after diverting began
        pair.store(query_wire, reply)
    packets = [client_query("allowed.example", "A", **v) for v in edns_variants()]
    packets = [p for p in packets if isinstance(parse_query(p), Query)]  # not BADVERS
    pair.compare(packets, True)
    for packet in packets:
        assert not pair.in_c[packet]
        resp = pair.pure.handle(packet, True, True)
        assert isinstance(resp, bytes) and bytes([192, 0, 2, 44]) in resp
        assert b"\xc63d\x07" not in resp  # not the cached 198.51.100.7


@pytest.fixture
def clock(monkeypatch):
    import types

    from test_resolver_fastpath import NOW

    import resolver.engine

    monkeypatch.setattr(resolver.engine, "time", types.SimpleNamespace(monotonic=lambda: NOW))


assert "allowed.example" in NAMES


# ---------------------------------------------------------------------------------------------
# The real service: health check, fail open, protected names, cap


class Health:
    """The proxy's /healthz stand-in: a real HTTP server whose status the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Health:
        async def healthz(_: web.Request) -> web.Response:
            return web.Response(status=self.status, text="{}")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@contextlib.asynccontextmanager
async def stack(tmp_path, state: ListState, **proxy):
    upstream = await FakeUpstream().start()
    for name in ("shared.example", "www.shared.example", "www.protected.example", "b.example"):
        upstream.add(name, "A", ORIGIN_V4, ttl=300)
        upstream.add(name, "MX", f"10 mail.{name}.", ttl=300)
    health = await Health().start()
    write_state(tmp_path, state, 1)
    config = make_config(
        tmp_path,
        [upstream.port],
        url_proxy={**PROXY, "health_url": f"http://127.0.0.1:{health.port}/healthz", **proxy},
        rails={"protected_names": ["protected.example"]},
    )
    try:
        async with running(config) as service:
            yield service, upstream, health
    finally:
        await health.stop()
        await upstream.stop()


async def wait_divert(service, active: bool, timeout: float = 10.0) -> None:
    async def until() -> None:
        while (service.resolver.lists.divert is not None) != active:
            service.divert_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.divert_changed.wait(), 0.5)

    await asyncio.wait_for(until(), timeout)


async def test_diverts_only_while_the_proxy_is_healthy(tmp_path):
    state = divert_state([], ["shared.example"], ["shared.example/album/1/"])
    async with stack(tmp_path, state) as (service, upstream, health):
        await wait_divert(service, True)
        port = service.port
        for name in ("shared.example", "www.shared.example", "WwW.SHARED.example"):
            msg = await ask(port, name, "A")
            assert addresses(msg) == [PROXY_V4], name
        msg = await ask(port, "shared.example", "AAAA")  # no IPv6 proxy: NODATA
        assert msg.rcode() == dns.rcode.NOERROR and addresses(msg) == []
        msg = await ask(port, "shared.example", "MX")  # mail is not the proxy's business
        assert "mail.shared.example" in msg.to_text()
        msg = await ask(port, "b.example", "A")
        assert addresses(msg) == [ORIGIN_V4]
        assert upstream.count("shared.example") == 1  # only the MX went upstream

        health.status = 503  # the proxy fails: forwarded as usual within a few checks
        await wait_divert(service, False)
        msg = await ask(port, "shared.example", "A")
        assert addresses(msg) == [ORIGIN_V4]
        snap = await service.snapshot()
        assert snap["divert"]["proxy_up"] == 0 and snap["divert"]["active"] == 0

        health.status = 200
        await wait_divert(service, True)
        msg = await ask(port, "shared.example", "A")  # cached meanwhile, diverted again
        assert addresses(msg) == [PROXY_V4]

        await health.stop()  # the proxy's port closed: same as unhealthy
        await wait_divert(service, False)
        msg = await ask(port, "shared.example", "A")
        assert addresses(msg) == [ORIGIN_V4]


async def test_protected_names_are_never_diverted(tmp_path):
    state = divert_state([], ["protected.example", "shared.example"])
    async with stack(tmp_path, state) as (service, _, _):
        await wait_divert(service, True)
        msg = await ask(service.port, "www.protected.example", "A")
        assert addresses(msg) == [ORIGIN_V4]
        msg = await ask(service.port, "shared.example", "A")
        assert addresses(msg) == [PROXY_V4]


async def test_over_the_cap_nothing_is_diverted_and_an_alarm_is_raised(tmp_path, caplog):
    state = divert_state([], ["shared.example", "a.example", "c.example"])
    with caplog.at_level("INFO", logger="cordon.resolver"):
        async with stack(tmp_path, state, max_hosts=2) as (service, _, _):
            await asyncio.wait_for(service.swapped.wait(), 10)

            async def probed() -> None:
                while not service.stats.divert_proxy_up:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(probed(), 10)  # the proxy is up: only the cap stops it
            assert service.resolver.lists.divert is None
            msg = await ask(service.port, "shared.example", "A")
            assert addresses(msg) == [ORIGIN_V4]
            snap = await service.snapshot()
            assert snap["divert"]["over_cap"] == 1 and snap["divert"]["hosts"] == 3
    assert "more than url_proxy.max_hosts" in caplog.text


def test_config_needs_a_proxy_address(tmp_path):
    from blocklist.config import ConfigError

    with pytest.raises(ConfigError, match="url_proxy: Value error, set ipv4 and/or ipv6"):
        make_config(tmp_path, [53], url_proxy={"ipv4": ""})
