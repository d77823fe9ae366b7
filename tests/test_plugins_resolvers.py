"""The Cordon plugins inside real resolvers on loopback ports: Unbound (python module),
PowerDNS Recursor (Lua hooks) and dnsdist (Lua action), each run by its Debian package.

Each resolver forwards to a loopback authoritative upstream that serves plain answers and CNAME
chains; the list arrives as the index file `resolver sync` writes. The same behaviour is
checked for every resolver; what only one of them does is checked in its own test below.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import tools
from plugin_fixtures import (
    ALLOWED_V4,
    LUA_DIR,
    Daemon,
    addresses,
    ask,
    blast,
    blocked_v4,
    dns_port,
    dnsdist_config,
    free_port,
    lua_settings,
    malformed_queries,
    plugin_settings,
    publish,
    recursor_argv,
    start_dnsdist,
    start_recursor,
    start_unbound,
    unbound_config,
    upstream_zone,
    wait_for,
)
from resolver_fixtures import STOP_V6, ede, list_state

from blocklist.sync.index import INDEX_FILE

ROOT_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.tools("unbound", "pdns_recursor", "dnsdist")


@pytest.fixture
async def upstream():
    up = await upstream_zone().start()
    yield up
    await up.stop()


STARTERS = {"unbound": start_unbound, "recursor": start_recursor, "dnsdist": start_dnsdist}


@pytest.fixture(params=sorted(STARTERS))
async def resolver(request, tmp_path: Path, upstream):
    state_dir = tmp_path / "state"
    publish(state_dir, ["listed.test"], 1)
    daemon = await STARTERS[request.param](tmp_path, upstream.port, state_dir)
    daemon.state_dir = state_dir  # type: ignore[attr-defined]
    yield daemon
    daemon.stop()


async def test_listed_names_types_and_cname_chains(resolver: Daemon, upstream) -> None:
    port = resolver.port
    for name in ("listed.test", "www.listed.test", "deep.www.listed.test", "WwW.LiStEd.TeSt"):
        msg = await ask(port, name)
        assert blocked_v4(msg), msg
        assert msg.answer[0].ttl == 60
        assert (16, "blocked by the national list") in ede(msg)
        # PowerDNS Recursor 4.8 carries one EDE code per answer: Censored, not Forged.
        assert ((4, None) in ede(msg)) == (resolver.name != "recursor")
    msg = await ask(port, "www.listed.test", "AAAA")
    assert msg.rcode() == 0 and addresses(msg) == [STOP_V6]
    for rdtype in ("HTTPS", "SVCB", "MX", "TXT"):
        msg = await ask(port, "deep.www.listed.test", rdtype)
        assert msg.rcode() == 0 and not msg.answer, (rdtype, msg)
        soa = msg.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "deep.www.listed.test."
        assert (16, "blocked by the national list") in ede(msg) and (4, None) not in ede(msg)
    # Nothing for a listed name ever reached the upstream.
    assert upstream.count("deep.www.listed.test") == 0 and upstream.count("listed.test") == 0
    # A CNAME chain from an allowed name into a listed one is answered as listed.
    msg = await ask(port, "alias.allowed.test")
    assert blocked_v4(msg), msg
    assert upstream.count("alias.allowed.test") >= 1
    # And the chain's answer was not left in the cache: the next one is blocked too.
    assert blocked_v4(await ask(port, "alias.allowed.test"))
    # The listed target's records were fetched along the chain; a non-recursive query (cache
    # snooping) must not reveal them: refused, or answered as listed.
    q = dns.message.make_query("cdn.listed.test", "A")
    q.flags &= ~dns.flags.RD
    msg = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
    assert ALLOWED_V4 not in addresses(msg), msg
    # Allowed names (and look-alikes that only share a string suffix) resolve normally.
    for name in ("allowed.test", "www.allowed.test"):
        msg = await ask(port, name)
        assert msg.rcode() == 0 and addresses(msg) == [ALLOWED_V4] and not ede(msg)
    assert (await ask(port, "notlisted.test")).rcode() == 3
    assert (await ask(port, "allowed.test", "AAAA")).answer


async def test_update_add_and_delist_reach_cached_names(resolver: Daemon) -> None:
    port, state_dir = resolver.port, resolver.state_dir  # type: ignore[attr-defined]
    # Cached before it is listed: a plain answer with a 300 s TTL sits in Unbound's caches.
    for _ in range(3):
        msg = await ask(port, "later.test")
        assert addresses(msg) == [ALLOWED_V4]
    publish(state_dir, ["listed.test", "later.test"], 2)
    added = await wait_for(
        lambda: _is_blocked(port, "later.test"), "later.test blocked", daemon=resolver
    )
    assert blocked_v4(await ask(port, "sub.later.test"))
    publish(state_dir, ["later.test"], 3)
    freed = await wait_for(
        lambda: _resolves(port, "listed.test"), "listed.test freed", daemon=resolver
    )
    assert blocked_v4(await ask(port, "later.test"))
    print(f"\n{resolver.name}: cached name listed in {added:.2f} s, delisted in {freed:.2f} s")


async def _is_blocked(port: int, name: str) -> bool:
    return blocked_v4(await ask(port, name))


async def _resolves(port: int, name: str) -> bool:
    return addresses(await ask(port, name)) == [ALLOWED_V4]


async def test_damaged_index_is_refused_and_the_list_kept(resolver: Daemon) -> None:
    port, state_dir = resolver.port, resolver.state_dir  # type: ignore[attr-defined]
    path = state_dir / INDEX_FILE
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[-40] ^= 0xFF  # a digest byte: same size, wrong integrity check
    for n, data in enumerate([bytes(damaged), good[:-7], b"CDXI" + b"\x00" * 40]):
        tmp = state_dir / "damaged.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        await wait_for(
            lambda n=n: resolver.log().count("refused a new index") > n,
            "the damaged index to be refused",
            daemon=resolver,
        )
        assert blocked_v4(await ask(port, "www.listed.test"))
    assert "integrity check failed" in resolver.log() and "size does not match" in resolver.log()
    publish(state_dir, ["later.test"], 2)
    await wait_for(lambda: _is_blocked(port, "later.test"), "serial 2", daemon=resolver)
    assert await _resolves(port, "listed.test")


async def test_still_answering_after_malformed_queries(resolver: Daemon) -> None:
    await asyncio.to_thread(blast, resolver.port, malformed_queries(10_000))
    # Answering again (a backlog of junk may take a moment to drain), and still right.
    await wait_for(
        lambda: _is_blocked(resolver.port, "www.listed.test"), "blocked", daemon=resolver
    )
    assert await _resolves(resolver.port, "allowed.test")
    assert resolver.alive()
    assert "listed.test" not in resolver.log()  # no query name in the daemon's log


@pytest.mark.parametrize("kind", sorted(STARTERS))
async def test_no_index_yet_then_one_appears(tmp_path: Path, upstream, kind: str) -> None:
    state_dir = tmp_path / "state"
    daemon = await STARTERS[kind](tmp_path, upstream.port, state_dir)
    try:
        assert "nothing is blocked" in daemon.log()
        assert await _resolves(daemon.port, "listed.test")
        publish(state_dir, ["listed.test"], 1)
        await wait_for(lambda: _is_blocked(daemon.port, "listed.test"), "first list", daemon=daemon)
    finally:
        daemon.stop()


def test_bad_settings_stop_unbound_with_a_clear_error(tmp_path: Path) -> None:
    conf = unbound_config(tmp_path, dns_port(), free_port())
    settings = plugin_settings(tmp_path, tmp_path / INDEX_FILE, ttl=-5)
    daemon = Daemon(
        "unbound",
        [tools.path("unbound"), "-d", "-c", str(conf)],
        0,
        tmp_path,
        {"CORDON_UNBOUND_CONFIG": str(settings), "PYTHONPATH": "/usr/lib/python3/dist-packages"},
    ).start()
    try:
        assert daemon.proc.wait(30) != 0
    finally:
        daemon.stop()
    assert f"cordon: {settings}: ttl: -5 is not within" in daemon.log()


async def test_unbound_with_serve_expired_blocks_cached_names(tmp_path: Path, upstream) -> None:
    state_dir = tmp_path / "state"
    publish(state_dir, ["listed.test"], 1)
    # Expired answers go through the modules first only with a client timeout (docs/plugins.md).
    extra = "".join(
        f"    {line}\n"
        for line in (
            "serve-expired: yes",
            "serve-expired-ttl: 86400",
            "serve-expired-client-timeout: 1800",
        )
    )
    daemon = await start_unbound(tmp_path, upstream.port, state_dir, server_extra=extra)
    try:
        assert await _resolves(daemon.port, "later.test")
        publish(state_dir, ["later.test"], 2)
        await wait_for(lambda: _is_blocked(daemon.port, "later.test"), "listed", daemon=daemon)
        # Once blocked, never the stale cached answer again.
        for _ in range(20):
            assert await _is_blocked(daemon.port, "later.test")
    finally:
        daemon.stop()


# unbound-control and rec_control come with the unbound and pdns-recursor packages (module marker).
@pytest.mark.parametrize("kind", ["unbound", "recursor"])
async def test_after_change_flush_reaches_cached_names(tmp_path: Path, upstream, kind: str) -> None:
    """Caches kept at full TTLs; the configured flush runs when a new list is taken."""
    state_dir = tmp_path / "state"
    publish(state_dir, ["listed.test"], 1)
    if kind == "unbound":
        flush = ["unbound-control", "-c", str(tmp_path / "unbound.conf"), "flush_zone", "."]
        daemon = await start_unbound(
            tmp_path, upstream.port, state_dir, control=True, cache_horizon=0, after_change=flush
        )
    else:
        flush = ["rec_control", f"--socket-dir={tmp_path}", "wipe-cache", ".$"]
        daemon = await STARTERS[kind](
            tmp_path, upstream.port, state_dir, packetcache_ttl=86400, after_change=flush
        )
    try:
        for _ in range(3):
            assert await _resolves(daemon.port, "later.test")
        publish(state_dir, ["listed.test", "later.test"], 2)
        took = await wait_for(
            lambda: _is_blocked(daemon.port, "later.test"), "listed", daemon=daemon
        )
        assert "after_change" not in daemon.log()  # the command ran and succeeded
        publish(state_dir, ["later.test"], 3)
        await wait_for(lambda: _resolves(daemon.port, "listed.test"), "freed", daemon=daemon)
        print(f"\n{kind} with a flush: cached name listed in {took:.2f} s")
    finally:
        daemon.stop()


@pytest.mark.parametrize("kind", ["recursor", "dnsdist"])
def test_bad_lua_settings_stop_the_daemon_with_a_clear_error(tmp_path: Path, kind: str) -> None:
    settings = lua_settings(tmp_path, tmp_path / INDEX_FILE, ipv4=["2001:db8::1"])
    if kind == "recursor":
        argv = recursor_argv(tmp_path, dns_port(), free_port())
    else:
        conf = dnsdist_config(tmp_path, dns_port(), free_port())
        argv = [tools.path("dnsdist"), "--supervised", "--disable-syslog", "-C", str(conf)]
    env = {"CORDON_LUA_SETTINGS": str(settings), "CORDON_LUA_DIR": str(LUA_DIR)}
    daemon = Daemon(kind, argv, 0, tmp_path, env).start()
    try:
        assert daemon.proc.wait(30) != 0
    finally:
        daemon.stop()
    assert f"cordon: {settings}: ipv4: 2001:db8::1 is not an IPv4 address" in daemon.log()


@pytest.mark.parametrize("kind", sorted(STARTERS))
async def test_publish_to_enforced_through_resolver_sync(
    tmp_path: Path, upstream, kind: str
) -> None:
    """End to end: authority publishes, `resolver sync` (a real process) verifies and writes the
    index, Unbound enforces it; add and delist timed from the publish call."""
    from authority_fixtures import start_authority

    from signing import format_public_key

    api = await start_authority(tmp_path / "authority")
    state_dir = tmp_path / "state"
    url = str(api.client.make_url("")).rstrip("/")
    toml = tmp_path / "resolver.toml"
    toml.write_text(
        "[sync]\n"
        f'authority_url = "{url}"\n'
        f'token = "{api.tokens["isp"]}"\n'
        f'root_keys = ["{format_public_key(api.root)}"]\n'
        f'state_dir = "{state_dir}"\n'
        "long_poll_seconds = 30\n"
    )
    sync = Daemon(
        "sync",
        [sys.executable, "-m", "resolver.cli", "sync", "--config", str(toml)],
        0,
        tmp_path,
        {"PYTHONPATH": str(ROOT_DIR)},
    ).start()
    daemon = await STARTERS[kind](tmp_path, upstream.port, state_dir)
    try:
        assert await _resolves(daemon.port, "later.test")  # cached before it is listed
        start = time.monotonic()
        _, body = await api.call(
            "alice",
            "POST",
            "/v1/entries",
            {"value": "later.test", "hosting_country": "NL", "evidence": "c"},
        )
        await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
        await api.call("alice", "POST", "/v1/publish")
        await wait_for(lambda: _is_blocked(daemon.port, "later.test"), "listed", daemon=daemon)
        added = time.monotonic() - start
        assert b"later" not in (state_dir / INDEX_FILE).read_bytes()  # digests only
        start = time.monotonic()
        await api.call("alice", "POST", f"/v1/entries/{body['id']}/delist", {"reason": "gone"})
        await api.call("bob", "POST", f"/v1/entries/{body['id']}/delist/confirm")  # four eyes
        await api.call("alice", "POST", "/v1/publish")
        await wait_for(lambda: _resolves(daemon.port, "later.test"), "delisted", daemon=daemon)
        freed = time.monotonic() - start
        print(f"\npublish -> enforced in {kind}: add {added:.2f} s, delist {freed:.2f} s")
    finally:
        daemon.stop()
        sync.stop()
        await api.client.close()


@pytest.mark.parametrize("kind", ["recursor", "dnsdist"])
async def test_lua_hashing_matches_the_resolver_matcher(
    tmp_path: Path, upstream, kind: str
) -> None:
    """Differential: the Lua reader blocks exactly the names Cordon's own matcher blocks."""
    from test_plugins_index import random_domains

    from resolver.matcher import Matcher

    rnd = random.Random(11)
    listed = random_domains(rnd, 400)
    state_dir = tmp_path / "state"
    publish(state_dir, listed, 1)
    matcher = Matcher(list_state(listed))
    names = listed[:100] + [f"www.{d}" for d in listed[100:160]] + [f"x{d}" for d in listed[:60]]
    names += random_domains(rnd, 120)
    daemon = await STARTERS[kind](tmp_path, upstream.port, state_dir)
    try:
        for name in names:
            msg = await ask(daemon.port, name)
            assert blocked_v4(msg) == (matcher.match(name.encode()) >= 0), name
    finally:
        daemon.stop()
