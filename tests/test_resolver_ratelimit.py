"""Per-client rate limiting: same decisions and bytes on the C and Python paths, real sockets."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import dns.flags
import dns.message
import dns.rcode
import pytest
from resolver_fixtures import (
    ROOT_PUB,
    FakeUpstream,
    addresses,
    ask_tcp,
    config_error,
    make_config,
    running,
)
from test_resolver_service import get

from resolver import fastpath
from resolver.config import RateLimitSection
from resolver.ratelimit import ALLOW, DROP, SLIP, RateLimiter, slip_answer

ADDR = "198.51.100.7"


@pytest.mark.skipif(not fastpath.available(), reason=str(fastpath.UNAVAILABLE))
@pytest.mark.parametrize("max_clients", [4, 1000])
def test_c_and_python_limiters_take_the_same_decisions(max_clients):
    settings = RateLimitSection(
        enabled=True,
        rate=5.0,
        burst=3.0,
        ipv4_prefix=24,
        ipv6_prefix=56,
        slip=3,
        max_clients=max_clients,
    )
    py = RateLimiter(settings)
    engine = fastpath.engine(10, 10000)
    engine.set_ratelimit(5.0, 3.0, 24, 56, 3, max_clients)
    rng = random.Random(5)
    hosts = [f"192.0.2.{i}" for i in range(1, 6)] + [f"198.51.100.{i}" for i in range(3)]
    hosts += ["2001:db8:0:1::1", "2001:db8:0:1:ffff::9", "2001:db8:0:100::1", "::1", "bogus"]
    now = 100.0
    seen = {ALLOW: 0, DROP: 0, SLIP: 0}
    for _ in range(20000):
        now += rng.choice([0.0, 0.0, 0.001, 0.01, 0.05, 0.3])
        host = rng.choice(hosts)
        want = py.check(host, now)
        assert engine.limit(host, now) == want, (host, now)
        seen[want] += 1
    assert all(seen.values()), seen
    assert py.counts() == engine.ratelimit_counts()
    # Prefixes: 192.0.2.1 and .5 share a /24 bucket; the IPv6 /56 holds both first addresses.
    assert py.key("192.0.2.1") == py.key("192.0.2.5") != py.key("198.51.100.1")
    assert py.key("2001:db8:0:1::1") == py.key("2001:db8:0:1:ffff::9")
    assert py.key("2001:db8:0:1::1") != py.key("2001:db8:0:100::1")


def query_wire(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0)
    q.id = qid
    return q.to_wire()


async def snapshot_until(service, action: str, count: int, timeout: float = 10.0) -> dict:
    """The counters once `ratelimited[action]` reached `count` (an observable event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = await service.snapshot()
        if snap["ratelimited"][action] >= count:
            return snap
        await asyncio.sleep(0.02)
    raise AssertionError(f"ratelimited[{action}] never reached {count}")


@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
async def test_over_the_limit_udp_drops_and_slips_tcp_refused(tmp_path, fast_path):
    up = await FakeUpstream().start()
    up.add("fine.example", "A", ADDR)
    config = make_config(
        tmp_path,
        [up.port],
        server={"fast_path": fast_path},
        ratelimit={"enabled": True, "rate": 0.001, "burst": 3, "slip": 2},
    )
    loop = asyncio.get_running_loop()
    try:
        async with running(config) as service:
            port = service.port
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
            await loop.sock_connect(sock, ("127.0.0.1", port))
            try:
                for i in range(3):  # the burst: answered
                    await loop.sock_sendall(sock, query_wire("fine.example", i))
                    resp = dns.message.from_wire(await loop.sock_recv(sock, 4096))
                    assert addresses(resp) == [ADDR]
                # Denied 1: dropped (seen in the counters, no reply).
                await loop.sock_sendall(sock, query_wire("fine.example", 10))
                await snapshot_until(service, "drop", 1)
                # Denied 2: slipped, an empty truncated reply made from the query's bytes.
                wire = query_wire("fine.example", 11)
                await loop.sock_sendall(sock, wire)
                got = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                assert got == slip_answer(wire)
                slipped = dns.message.from_wire(got)
                assert slipped.flags & dns.flags.TC and not slipped.answer and slipped.id == 11
                # Denied 3: dropped again; a malformed datagram over the limit is dropped too.
                await loop.sock_sendall(sock, query_wire("fine.example", 12))
                await snapshot_until(service, "drop", 2)
                await loop.sock_sendall(sock, b"\x00\x01garbage")
                snap = await snapshot_until(service, "slip", 2)
                assert snap["ratelimited"] == {"drop": 2, "slip": 2}
                _, text = await get(service.metrics_port, "/metrics")
                assert 'cordon_resolver_ratelimited_total{action="slip"} 2.0' in text
            finally:
                sock.close()
            # Another client (127.0.0.2) has its own bucket.
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.setblocking(False)
            other.bind(("127.0.0.2", 0))
            try:
                await loop.sock_connect(other, ("127.0.0.1", port))
                await loop.sock_sendall(other, query_wire("fine.example", 20))
                resp = dns.message.from_wire(await loop.sock_recv(other, 4096))
                assert addresses(resp) == [ADDR]
            finally:
                other.close()
            # TCP from the limited client: REFUSED, never an answer (127.0.0.1 has no token).
            resp = await ask_tcp(port, "fine.example")
            assert resp.rcode() == dns.rcode.REFUSED and not resp.answer
            snap = await service.snapshot()
            assert snap["internal_errors"] == 0
    finally:
        await up.stop()


def test_rate_limit_config_errors_name_the_key(tmp_path):
    base = f'[sync]\nroot_keys = ["{ROOT_PUB}"]\n[ratelimit]\nenabled = true\n'
    for body, key in (
        ("ipv4_prefix = 33\n", "ratelimit.ipv4_prefix"),
        ("rate = 0\n", "ratelimit.rate"),
        ("burst = 0.5\n", "ratelimit.burst"),
        ("slip = -1\n", "ratelimit.slip"),
        ("per_second = 5\n", "ratelimit.per_second"),
    ):
        message = config_error(tmp_path / "resolver.toml", base + body)
        assert key in message, message
