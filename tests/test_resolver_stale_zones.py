"""Serve-stale (RFC 8767) and per-zone forwarding, with real sockets, dig and both UDP paths."""

from __future__ import annotations

import asyncio
import subprocess
import time

import dns.message
import dns.rcode
import pytest
import tools
from resolver_fixtures import (
    STOP_V4,
    FakeUpstream,
    addresses,
    ask,
    ask_tcp,
    config_error,
    ede,
    free_port,
    make_config,
    query,
    running,
    write_list,
)
from test_resolver_fastpath import NOW, REPLIES, Pair, client_query

from resolver import fastpath
from resolver.dnswire import Query

ADDR = "198.51.100.7"


async def until(predicate, timeout: float, what: str):
    """Poll `predicate` (async, returns a value or None) until it gives a value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value is not None:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Serve-stale


@pytest.mark.tools("dig")
@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
async def test_stale_answer_when_upstreams_fail_then_servfail_past_the_bound(tmp_path, fast_path):
    up = await FakeUpstream().start()
    up.add("short.example", "A", ADDR, ttl=1)
    write_list(tmp_path, ["blocked.example"])
    config = make_config(
        tmp_path,
        [up.port],
        server={"fast_path": fast_path},
        cache={"stale_max_age": 3, "stale_answer_ttl": 30},
    )
    try:
        async with running(config) as service:
            port = service.port
            fresh = await ask(port, "short.example")
            assert addresses(fresh) == [ADDR] and not ede(fresh)
            up.drop = True  # every upstream now times out

            async def stale_seen():
                resp = await ask(port, "short.example")
                assert resp.rcode() == dns.rcode.NOERROR and addresses(resp) == [ADDR]
                return resp if ede(resp) else None  # fresh from the cache until it expires

            resp = await until(stale_seen, 10, "a stale answer")
            assert ede(resp) == [(3, None)] and resp.answer[0].ttl == 30
            # Without EDNS: the same stale answer, no OPT; over TCP too.
            plain = await ask(port, query("short.example", edns=False))
            assert addresses(plain) == [ADDR] and plain.edns < 0
            over_tcp = await ask_tcp(port, "short.example")
            assert addresses(over_tcp) == [ADDR] and ede(over_tcp) == [(3, None)]
            proc = await asyncio.create_subprocess_exec(
                tools.path("dig"), "-p", str(port), "@127.0.0.1", "short.example", "A",
                stdout=subprocess.PIPE,
            )  # fmt: skip
            out = (await proc.communicate())[0].decode()
            assert "EDE: 3 (Stale Answer)" in out and f"30\tIN\tA\t{ADDR}" in out, out
            # A listed name is blocked, never served stale.
            assert addresses(await ask(port, "www.blocked.example")) == [STOP_V4]

            async def servfail_seen():
                resp = await ask(port, "short.example")
                if resp.rcode() == dns.rcode.SERVFAIL:
                    return resp
                assert addresses(resp) == [ADDR] and ede(resp) == [(3, None)]
                return None

            # Bounded: past stale_max_age the answer is gone and SERVFAIL is said.
            await until(servfail_seen, 15, "SERVFAIL past stale_max_age")
            snap = await service.snapshot()
            assert snap["stale_answers"] >= 3 and snap["internal_errors"] == 0
    finally:
        await up.stop()


async def test_without_serve_stale_an_expired_answer_is_servfail(tmp_path):
    up = await FakeUpstream().start()
    up.add("short.example", "A", ADDR, ttl=1)
    config = make_config(tmp_path, [up.port])
    try:
        async with running(config) as service:
            assert addresses(await ask(service.port, "short.example")) == [ADDR]
            up.drop = True

            async def servfail():
                resp = await ask(service.port, "short.example")
                return resp if resp.rcode() == dns.rcode.SERVFAIL else None

            await until(servfail, 10, "SERVFAIL")
            assert (await service.snapshot())["stale_answers"] == 0
    finally:
        await up.stop()


def test_stale_store_is_bounded(tmp_path, clock):
    pair = Pair(tmp_path, cache={"stale_max_age": 100, "max_entries": 3})
    for query_wire, reply in REPLIES:
        pair.store(query_wire, reply)
    assert len(pair.pure.stale) == 3 and len(pair.fast.stale) == 3  # type: ignore[arg-type]


@pytest.fixture
def clock(monkeypatch):
    import types

    import resolver.engine

    monkeypatch.setattr(resolver.engine, "time", types.SimpleNamespace(monotonic=lambda: NOW))


@pytest.mark.skipif(not fastpath.available(), reason=str(fastpath.UNAVAILABLE))
def test_stale_answers_are_the_same_on_both_paths(tmp_path, clock):
    """An expired entry reached through the C path (a miss it hands over) and through the
    Python path gives the same stale bytes when the upstream is dead."""
    dead = free_port()
    pair = Pair(
        tmp_path,
        cache={"stale_max_age": 100},
        upstream={"servers": [f"127.0.0.1:{dead}"], "timeout": 0.2},
    )
    pair.set_list(["blocked.example"], 1)
    for query_wire, reply in REPLIES:
        pair.store(query_wire, reply)
    variants = ({"edns": False}, {"edns": 0}, {"edns": 0, "payload": 512})
    packets = [client_query("expired.example", "A", **v) for v in variants]

    async def both(packet: bytes) -> tuple[bytes, bytes]:
        out = []
        for r in (pair.pure, pair.fast):
            q = r.answer_udp(packet, True, NOW)
            assert isinstance(q, Query)  # expired: a miss on both paths
            out.append(await r.forward(q, True))
        return out[0], out[1]

    for packet in packets:
        want, got = asyncio.run(both(packet))
        assert want == got
        resp = dns.message.from_wire(want)
        assert addresses(resp) == ["198.51.100.9"] and resp.answer[0].ttl == 30
        assert ede(resp) == ([(3, None)] if resp.edns >= 0 else [])
    assert pair.pure.stats.stale_answers == pair.fast.stats.stale_answers == len(packets)


# ---------------------------------------------------------------------------------------------
# Per-zone forwarding


async def test_zones_forward_to_the_longest_match(tmp_path):
    default, corp, lab = [await FakeUpstream().start() for _ in range(3)]
    for up, addr in ((default, "198.51.100.1"), (corp, "198.51.100.2"), (lab, "198.51.100.3")):
        for name in (
            "www.isp.example",
            "notcorp.isp.example",
            "corp.isp.example",
            "www.corp.isp.example",
            "x.lab.corp.isp.example",
        ):
            up.add(name, "A", addr)
    write_list(tmp_path, ["bad.corp.isp.example"])
    config = make_config(
        tmp_path,
        [default.port],
        upstream={
            "zones": {
                "Corp.ISP.example.": [f"127.0.0.1:{corp.port}"],
                "lab.corp.isp.example": [f"127.0.0.1:{lab.port}"],
            }
        },
    )
    try:
        async with running(config) as service:
            port = service.port
            expect = {
                "www.isp.example": "198.51.100.1",
                "notcorp.isp.example": "198.51.100.1",  # a label boundary, not a string suffix
                "corp.isp.example": "198.51.100.2",
                "WWW.corp.isp.example": "198.51.100.2",
                "x.lab.corp.isp.example": "198.51.100.3",
            }
            for name, addr in expect.items():
                assert addresses(await ask(port, name)) == [addr], name
            assert addresses(await ask_tcp(port, "www.corp.isp.example")) == ["198.51.100.2"]
            # A listed name inside a zone is blocked; no upstream ever hears of it.
            assert addresses(await ask(port, "www.bad.corp.isp.example")) == [STOP_V4]
            for up in (default, corp, lab):
                assert not any("bad.corp" in name for _, name, _ in up.seen)
            # A dead zone upstream fails that zone only.
            await lab.stop()
            resp = await ask(port, "y.lab.corp.isp.example")
            assert resp.rcode() == dns.rcode.SERVFAIL
            assert addresses(await ask(port, "www.isp.example")) == ["198.51.100.1"]
            v = service.check_now("y.lab.corp.isp.example")
            assert v["verdict"] == "not_listed" and v["zone"] == "lab.corp.isp.example"
            assert service.check_now("www.isp.example")["zone"] is None
            snap = await service.snapshot()
            assert {f"127.0.0.1:{u.port}" for u in (default, corp, lab)} <= set(snap["upstreams"])
    finally:
        for up in (default, corp):
            await up.stop()


def test_zone_config_errors_name_the_key(tmp_path):
    from resolver_fixtures import ROOT_PUB

    base = f'[sync]\nroot_keys = ["{ROOT_PUB}"]\n[upstream.zones]\n'
    cases = {
        '"corp.example" = ["not-an-address"]\n': "zone 'corp.example'",
        '"a..b.example" = ["192.0.2.1"]\n': "empty label",
        '"corp.example" = []\n': "1 to 16 servers",
        '"corp.example" = ["192.0.2.1"]\n"CORP.example." = ["192.0.2.2"]\n': "given twice",
        '"corp.example" = ["192.0.2.1:70000"]\n': "port",
    }
    for body, needle in cases.items():
        message = config_error(tmp_path / "resolver.toml", base + body)
        assert needle in message and "upstream.zones" in message, message
