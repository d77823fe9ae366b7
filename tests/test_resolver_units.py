"""The resolver's pieces on their own: matcher, cache, ACL, configuration and the example config."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import dns.message
import dns.rrset
import pytest
from resolver_fixtures import ROOT_PUB, list_state

from blocklist.config import ConfigError, load_config, validate_config
from blocklist.digests import digest, name_suffix_digests
from blocklist.state import ListState
from resolver.acl import Acl
from resolver.cache import CacheEntry, ResponseCache, clamp_ttls
from resolver.cli import apply_serve_flags
from resolver.config import ResolverConfig, parse_hostport
from resolver.dnswire import inspect_response
from resolver.matcher import Matcher

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# Matcher


def test_matcher_names_below_listed_domains_and_not_above():
    state = list_state(["blocked.example", "deep.a.example"], urls=["shared.example/x"])
    m = Matcher(state, 7)
    ids = {e.digest: e.entry_id for e in state}
    blocked_id = ids[digest("blocked.example")]
    assert m.match(b"blocked.example") == blocked_id
    assert m.match(b"www.blocked.example") == blocked_id
    assert m.match(b"a.b.c.blocked.example") == blocked_id
    assert m.match(b"x.deep.a.example") == ids[digest("deep.a.example")]
    assert m.match(b"a.example") == -1  # above a listed domain: not blocked
    assert m.match(b"notblocked.example") == -1
    assert m.match(b"example") == -1
    assert m.match(b"") == -1
    assert m.match(b"shared.example") == -1  # URL entries are not matched by DNS
    assert m.match(b"shared.example/x") == -1
    assert (len(m), m.domains, m.serial) == (3, 2, 7)
    assert m.match_any([b"x.example", b"www.blocked.example"]) == blocked_id
    assert Matcher.empty().match(b"blocked.example") == -1


def test_matcher_agrees_with_name_suffix_digests():
    names = [f"site{i}.example" for i in range(2000)]
    state = list_state(names)
    m = Matcher(state)
    listed = set(state.iter_digests())
    for i in range(0, 4000, 7):
        name = f"www.site{i}.example".encode()
        expected = any(d in listed for d in name_suffix_digests(name))
        assert (m.match(name) >= 0) == expected


def test_matcher_confirms_prefix_hits_against_the_full_digest():
    real = digest("blocked.example")
    twin = real[:8] + bytes(24)  # shares the 64-bit prefix, but is another digest
    lower, upper = sorted([real, twin])
    state = ListState(lower + upper, (1).to_bytes(8, "big") + (2).to_bytes(8, "big"), b"\x01\x01")
    m = Matcher(state)
    assert m.match(b"blocked.example") == (1 if real == lower else 2)
    state = ListState(twin, (9).to_bytes(8, "big"), b"\x01")
    assert Matcher(state).match(b"blocked.example") == -1


# ---------------------------------------------------------------------------------------------
# Cache


def reply(name: str, ttl: int = 300) -> tuple[bytes, object]:
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", "192.0.2.1"))
    wire = r.to_wire()
    return wire, inspect_response(wire)


def entry(name: str, size_pad: int = 0) -> CacheEntry:
    wire, info = reply(name)
    return CacheEntry(wire + b"\x00" * size_pad, info, 0.0, 100.0, (), 0, -1, False)


def test_cache_lru_by_entries():
    cache = ResponseCache(max_entries=3, max_bytes=1 << 20)
    for n in "abc":
        cache.put(n.encode(), entry(f"{n}.example"))
    assert cache.get(b"a", 1.0) is not None  # a is now the most recent
    cache.put(b"d", entry("d.example"))
    assert cache.get(b"b", 1.0) is None
    assert all(cache.get(k, 1.0) is not None for k in (b"a", b"c", b"d"))
    assert cache.evictions == 1
    assert cache.get(b"a", 100.0) is None  # expired
    assert len(cache) == 2


def test_cache_bounded_by_bytes():
    one = entry("a.example", 1000)
    cache = ResponseCache(max_entries=1000, max_bytes=one.size * 3 + 10)
    for i in range(10):
        cache.put(str(i).encode(), entry("a.example", 1000))
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    cache.put(b"huge", entry("a.example", 10_000))  # larger than the whole cache: not stored
    assert cache.get(b"huge", 1.0) is None
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_clamp_ttls():
    wire, info = reply("a.example", ttl=3600)
    out = clamp_ttls(wire, info, 100, 0)
    assert dns.message.from_wire(out).answer[0].ttl == 100
    wire, info = reply("a.example", ttl=5)
    out = clamp_ttls(wire, info, 60, 30)
    assert dns.message.from_wire(out).answer[0].ttl == 30


# ---------------------------------------------------------------------------------------------
# ACL and configuration


def test_acl():
    acl = Acl(["192.0.2.0/24", "2001:db8::/32"])
    assert acl.allowed("192.0.2.9") and acl.allowed("2001:db8::1")
    assert acl.allowed("127.0.0.1") and acl.allowed("::1")
    assert acl.allowed("::ffff:192.0.2.9")  # IPv4-mapped
    assert not acl.allowed("198.51.100.1") and not acl.allowed("2001:db9::1")
    assert not acl.allowed("not an address")
    strict = Acl([], allow_loopback=False)
    assert not strict.allowed("127.0.0.1")


def test_parse_hostport():
    assert parse_hostport("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_hostport("192.0.2.1:5353") == ("192.0.2.1", 5353)
    assert parse_hostport("2001:db8::1") == ("2001:db8::1", 53)
    assert parse_hostport("[2001:db8::1]:5353") == ("2001:db8::1", 5353)
    for bad, problem in [
        ("resolver.example", "not an IP address"),
        ("192.0.2.1:0", "port out of range"),
        ("[2001:db8::1", "missing ']'"),
        ("192.0.2.1:x", "port is not a number"),
        ("[2001:db8::1]:+5", "expected ':port'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse_hostport(bad)


def base(**sections) -> dict:
    data = {"sync": {"root_keys": [ROOT_PUB]}}
    data.update(sections)
    return data


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"server": {"workers": 0}}, "server.workers"),
        ({"server": {"listen": ["localhost"]}}, "server.listen"),
        ({"server": {"bogus": 1}}, "server.bogus: unknown key"),
        ({"upstream": {"servers": ["dns.example"]}}, "upstream.servers"),
        ({"blocking": {"ipv4": "2001:db8::1"}}, "blocking.ipv4"),
        ({"blocking": {"ede_text": "x" * 300}}, "blocking.ede_text"),
        ({"metrics": {"listen": "0.0.0.0"}}, "local-only"),
        ({"cache": {"min_ttl": 100, "max_ttl": 10}}, "min_ttl"),
        ({"nonsense": {}}, "nonsense: unknown key"),
    ],
)
def test_config_errors_name_the_key(sections, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(base(**sections), ResolverConfig, "resolver.toml")


def test_ede_text_defaults():
    config = validate_config(base(), ResolverConfig, "x")
    assert config.blocking.text("Authority X") == b"Blocked by order of Authority X"
    config = validate_config(
        base(blocking={"stop_page_url": "http://stop.isp.example/", "authority": "Police"}),
        ResolverConfig,
        "x",
    )
    assert (
        config.blocking.text("ignored")
        == b"Blocked by order of Police; see http://stop.isp.example/"
    )


def test_example_config_loads():
    config = load_config(REPO / "deploy" / "resolver.toml", ResolverConfig)
    assert config.upstream.servers
    assert config.blocking.ipv4
    assert config.server.port == 53
    assert config.metrics.listen == "127.0.0.1"


def test_serve_flags_override_the_file():
    config = validate_config(base(upstream={"servers": ["192.0.2.53"]}), ResolverConfig, "x")
    args = argparse.Namespace(
        config="resolver.toml",
        listen=["127.0.0.1,::1"],
        port=5300,
        workers=2,
        upstream=["192.0.2.1:5353", "[2001:db8::1]:53"],
        metrics_port=9999,
    )
    out = apply_serve_flags(args, config)
    assert out.server.listen == ["127.0.0.1", "::1"]
    assert (out.server.port, out.server.workers, out.metrics.port) == (5300, 2, 9999)
    assert out.upstream.servers == ["192.0.2.1:5353", "[2001:db8::1]:53"]
    args.upstream = None
    assert apply_serve_flags(args, config).upstream.servers == ["192.0.2.53"]
    args.workers = 0
    with pytest.raises(ConfigError, match=r"server\.workers"):
        apply_serve_flags(args, config)
    no_upstream = validate_config(base(), ResolverConfig, "x")
    args.workers = 1
    with pytest.raises(ConfigError, match=r"upstream\.servers"):
        apply_serve_flags(args, no_upstream)
