"""Forwarding end to end: a fake upstream on loopback, the cache, failover, CNAME chains."""

from __future__ import annotations

import asyncio
import time
import types

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from resolver_fixtures import (
    STOP_V4,
    FakeUpstream,
    addresses,
    ask,
    ask_raw,
    ask_tcp,
    ede,
    free_port,
    make_config,
    query,
    running,
    write_list,
)

import resolver.engine
from resolver import stats as S

LISTED = ["blocked.example"]


class Clock:
    """Stands in for the engine's `time` module so cache ageing needs no sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(resolver.engine, "time", types.SimpleNamespace(monotonic=c.monotonic))
    return c


@pytest.fixture
async def upstream():
    up = await FakeUpstream().start()
    up.add("allowed.example", "A", "198.51.100.7", ttl=300)
    up.add("www.allowed.example", "AAAA", "2001:db8::7", ttl=300)
    up.add("alias.example", "CNAME", "www.blocked.example.", ttl=300)
    up.add("www.blocked.example", "A", "198.51.100.66", ttl=300)
    up.add("chain.example", "CNAME", "alias.example.", ttl=300)
    up.add("big.example", "TXT", *[f'"{"x" * 200}{i}"' for i in range(15)], ttl=300)
    yield up
    await up.stop()


@pytest.fixture
async def server(tmp_path, upstream):
    write_list(tmp_path, LISTED)
    async with running(make_config(tmp_path, [upstream.port])) as service:
        yield service


async def test_forwarded_answer_keeps_id_and_case(server, upstream):
    q = query("AlLoWeD.example", "A")
    raw = await ask_raw(server.port, q.to_wire())
    resp = dns.message.from_wire(raw)
    assert resp.id == q.id and addresses(resp) == ["198.51.100.7"]
    assert b"\x07AlLoWeD\x07example" in raw
    assert upstream.seen == [("udp", "allowed.example.", "A")]  # lowercase upstream


async def test_cache_hit_with_decremented_ttl(server, upstream, clock):
    first = await ask(server.port, "allowed.example")
    assert first.answer[0].ttl == 300
    clock.offset = 100.4
    second = await ask(server.port, "ALLOWED.example")
    assert addresses(second) == ["198.51.100.7"]
    assert second.answer[0].ttl == 200
    assert upstream.count("allowed.example") == 1
    clock.offset = 301
    third = await ask(server.port, "allowed.example")
    assert third.answer[0].ttl == 300  # expired, fetched again
    assert upstream.count("allowed.example") == 2
    assert server.stats.totals()[2] == 1  # cache hits, on whichever path answered


async def test_cache_key_separates_type_and_do(server, upstream):
    await ask(server.port, "allowed.example", "A")
    await ask(server.port, "allowed.example", "A", do=True)
    await ask(server.port, "allowed.example", "AAAA")
    assert upstream.count("allowed.example") == 3
    await ask(server.port, "allowed.example", "A", do=True)
    assert upstream.count("allowed.example") == 3


async def test_negative_caching_uses_soa(server, upstream, clock):
    upstream.negative_ttl = 120
    resp = await ask(server.port, "nothing.example")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    clock.offset = 20.5
    resp = await ask(server.port, "nothing.example")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert resp.authority[0].ttl == 100
    assert upstream.count("nothing.example") == 1
    clock.offset = 121
    await ask(server.port, "nothing.example")
    assert upstream.count("nothing.example") == 2
    # NODATA (the name exists, not the type) is negative too.
    await ask(server.port, "allowed.example", "MX")
    await ask(server.port, "allowed.example", "MX")
    assert [t for _, n, t in upstream.seen if n == "allowed.example."] == ["MX"]


async def test_ttl_clamps(tmp_path, upstream, clock):
    write_list(tmp_path, LISTED)
    config = make_config(
        tmp_path, [upstream.port], cache={"max_ttl": 100, "min_ttl": 10, "negative_max_ttl": 5}
    )
    async with running(config) as service:
        resp = await ask(service.port, "allowed.example")
        assert resp.answer[0].ttl == 100
        clock.offset = 101
        await ask(service.port, "allowed.example")
        assert upstream.count("allowed.example") == 2
        resp = await ask(service.port, "gone.example")
        assert resp.authority[0].ttl == 10  # negative_max_ttl 5 raised to min_ttl 10
        clock.offset += 6
        await ask(service.port, "gone.example")
        assert upstream.count("gone.example") == 1


async def test_servfail_from_upstream_is_passed_on_not_cached(server, upstream):
    upstream.rcode = dns.rcode.SERVFAIL
    for _ in range(2):
        resp = await ask(server.port, "broken.example")
        assert resp.rcode() == dns.rcode.SERVFAIL
    assert upstream.count("broken.example") == 2


async def test_coalescing_identical_queries(server, upstream):
    upstream.delay = 0.3
    results = await asyncio.gather(*(ask(server.port, "allowed.example") for _ in range(20)))
    assert all(addresses(r) == ["198.51.100.7"] for r in results)
    assert upstream.count("allowed.example") == 1
    assert server.stats.coalesced == 19


@pytest.mark.parametrize("name", ["alias.example", "chain.example"])
async def test_cname_chain_to_listed_name_is_blocked(server, upstream, name):
    for _ in range(2):  # fetched, then from the cache
        resp = await ask(server.port, name)
        assert addresses(resp) == [STOP_V4]
        assert resp.question[0].name.to_text() == name + "."
        assert [c for c, _ in ede(resp)] == [4, 16]
    assert upstream.count(name) == 1
    assert server.stats.totals()[0][S.BLOCKED_CNAME] == 2


async def test_list_swap_rechecks_cached_answers(tmp_path, server, upstream):
    resp = await ask(server.port, "allowed.example")
    assert addresses(resp) == ["198.51.100.7"]
    server.swapped.clear()
    write_list(tmp_path, [*LISTED, "allowed.example"], serial=2)
    await asyncio.wait_for(server.swapped.wait(), 5)
    resp = await ask(server.port, "allowed.example")
    assert addresses(resp) == [STOP_V4]
    server.swapped.clear()
    write_list(tmp_path, LISTED, serial=3)
    await asyncio.wait_for(server.swapped.wait(), 5)
    resp = await ask(server.port, "allowed.example")
    assert addresses(resp) == ["198.51.100.7"]
    assert upstream.count("allowed.example") == 1  # the cache survived both swaps


async def test_big_answer_truncated_over_udp_full_over_tcp(server, upstream):
    resp = await ask(server.port, "big.example", "TXT", payload=1232)
    assert resp.flags & dns.flags.TC and not resp.answer
    resp = await ask(server.port, "big.example", "TXT", edns=False)
    assert resp.flags & dns.flags.TC
    resp = await ask_tcp(server.port, "big.example", "TXT")
    assert not resp.flags & dns.flags.TC
    assert len(resp.answer[0]) == 15
    resp = await ask(server.port, "big.example", "TXT", payload=4096)
    assert not resp.flags & dns.flags.TC and len(resp.answer[0]) == 15
    assert upstream.count("big.example") == 1


async def test_truncated_upstream_answer_is_fetched_over_tcp(server, upstream):
    upstream.truncate_over = 512
    resp = await ask_tcp(server.port, "big.example", "TXT")
    assert len(resp.answer[0]) == 15
    assert [t for t, n, _ in upstream.seen if n == "big.example."] == ["udp", "tcp"]


async def test_timeout_then_failover_and_skip(tmp_path):
    dead = await FakeUpstream(drop=True).start()
    good = await FakeUpstream().start()
    good.add("allowed.example", "A", "198.51.100.7")
    write_list(tmp_path, LISTED)
    config = make_config(
        tmp_path, [dead.port, good.port], upstream={"timeout": 0.3, "max_failures": 2}
    )
    try:
        async with running(config) as service:
            for i in range(4):
                started = time.monotonic()
                resp = await ask(service.port, f"n{i}.allowed.example")
                assert resp.rcode() == dns.rcode.NXDOMAIN
                waited = time.monotonic() - started
                if i < 2:
                    assert waited >= 0.3  # the dead one was tried first
            # After two failures the dead upstream is skipped.
            assert dead.count("n2.allowed.example") == 0
            assert dead.count("n3.allowed.example") == 0
            assert good.count("n3.allowed.example") == 1
            ups = service.stats.upstreams
            assert ups[f"127.0.0.1:{dead.port}"].errors["timeout"] == 2
            assert ups[f"127.0.0.1:{dead.port}"].up == 0
    finally:
        await dead.stop()
        await good.stop()


async def test_refused_upstream_fails_over(tmp_path):
    refusing = await FakeUpstream(rcode=dns.rcode.REFUSED).start()
    good = await FakeUpstream().start()
    good.add("allowed.example", "A", "198.51.100.7")
    write_list(tmp_path, LISTED)
    try:
        async with running(make_config(tmp_path, [refusing.port, good.port])) as service:
            resp = await ask(service.port, "allowed.example")
            assert addresses(resp) == ["198.51.100.7"]
    finally:
        await refusing.stop()
        await good.stop()


async def test_all_upstreams_down_servfail_with_ede(tmp_path):
    dead = await FakeUpstream(drop=True).start()
    write_list(tmp_path, LISTED)
    closed = free_port()  # nothing listens: ICMP port unreachable, a network error
    try:
        config = make_config(tmp_path, [dead.port], upstream={"timeout": 0.2})
        async with running(config) as service:
            resp = await ask(service.port, "allowed.example")
            assert resp.rcode() == dns.rcode.SERVFAIL
            assert [c for c, _ in ede(resp)] == [22]
            # Listed names are still answered without any upstream.
            assert addresses(await ask(service.port, "blocked.example")) == [STOP_V4]
        config = make_config(tmp_path, [closed], upstream={"timeout": 0.2})
        async with running(config) as service:
            resp = await ask(service.port, "allowed.example")
            assert resp.rcode() == dns.rcode.SERVFAIL
            assert [c for c, _ in ede(resp)] == [23]
            resp = await ask(service.port, "allowed.example", edns=False)
            assert resp.rcode() == dns.rcode.SERVFAIL and resp.edns == -1
    finally:
        await dead.stop()


async def test_spoofed_and_mismatched_replies_are_ignored(tmp_path):
    def handler(q: dns.message.Message):
        good = dns.message.make_response(q)
        good.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "198.51.100.7"))
        wrong_id = dns.message.make_response(q)
        wrong_id.id = (q.id + 1) & 0xFFFF
        wrong_id.answer.append(
            dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "203.0.113.66")
        )
        other = dns.message.make_query("evil.example", "A")
        other.id = q.id
        other_resp = dns.message.make_response(other)
        other_resp.answer.append(
            dns.rrset.from_text("evil.example.", 60, "IN", "A", "203.0.113.66")
        )
        wrong_type = dns.message.make_query(q.question[0].name, "AAAA")
        wrong_type.id = q.id
        return [
            wrong_id.to_wire(),
            dns.message.make_response(other).to_wire(),
            other_resp.to_wire(),
            dns.message.make_response(wrong_type).to_wire(),
            b"\x00" * 5,
            good.to_wire(),
        ]

    up = await FakeUpstream(handler=handler).start()
    write_list(tmp_path, LISTED)
    try:
        async with running(make_config(tmp_path, [up.port])) as service:
            resp = await ask(service.port, "allowed.example")
            assert addresses(resp) == ["198.51.100.7"]
            name = f"127.0.0.1:{up.port}"
            assert service.stats.upstreams[name].errors["mismatch"] == 5
    finally:
        await up.stop()


@pytest.mark.parametrize(("socket_queries", "min_ports"), [(1, 18), (5, 4)])
async def test_source_ports_rotate_and_ids_vary(tmp_path, socket_queries, min_ports):
    seen: list[tuple[int, int]] = []
    up = await FakeUpstream().start()
    proto = up._transport.get_protocol()
    original = proto.datagram_received

    def spy(data, addr):
        seen.append((addr[1], int.from_bytes(data[:2], "big")))
        original(data, addr)

    proto.datagram_received = spy
    write_list(tmp_path, LISTED)
    config = make_config(tmp_path, [up.port], upstream={"socket_queries": socket_queries})
    try:
        async with running(config) as service:
            for i in range(20):
                await ask(service.port, f"n{i}.example")
    finally:
        await up.stop()
    ports = {p for p, _ in seen}
    ids = {i for _, i in seen}
    assert len(seen) == 20 and len(ports) >= min_ports and len(ids) >= 18
