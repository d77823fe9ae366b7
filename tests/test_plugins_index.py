"""The plugin index file: what `resolver sync` writes, what every plugin checks and searches.

The Unbound plugin's reader (stdlib only, it runs inside Unbound) is tested against the
project's writer and against the resolver's own matcher on the same list (differential)."""

from __future__ import annotations

import importlib.util
import os
import random
import struct
from pathlib import Path

import pytest
from plugin_fixtures import UNBOUND_PLUGIN
from resolver_fixtures import list_state, write_list

from blocklist.digests import digest, query_digests
from blocklist.errors import ArtefactError
from blocklist.state import Entry, Kind, ListState
from blocklist.sync.index import (
    DIGESTS_OFFSET,
    FANOUT_OFFSET,
    INDEX_FILE,
    check_index,
    encode_index,
    index_subscriber,
    write_index,
)
from resolver.matcher import Matcher


def load_plugin():
    spec = importlib.util.spec_from_file_location("cordon_unbound_plugin", UNBOUND_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = load_plugin()


def random_domains(rnd: random.Random, n: int) -> list[str]:
    out = set()
    while len(out) < n:
        labels = [
            "".join(rnd.choice("abcdefghij0123-") for _ in range(rnd.randint(1, 8))).strip("-")
            or "x"
            for _ in range(rnd.randint(1, 3))
        ]
        out.add(".".join([*labels, "test"]))
    return sorted(out)


def test_layout_and_integrity(tmp_path: Path) -> None:
    state = list_state(["listed.test", "b.test"], urls=["shared.test/path/"])
    data = b"".join(encode_index(state, 7, 1234))
    info = check_index(data)
    assert (info.serial, info.count, info.verified_at) == (7, 2, 1234)
    assert info.state_checksum == state.checksum
    assert len(data) == DIGESTS_OFFSET + 2 * 32 + 32
    # The fan-out puts each digest in its bucket; URL entries are not in a DNS plugin's index.
    digests = [data[DIGESTS_OFFSET + i * 32 : DIGESTS_OFFSET + (i + 1) * 32] for i in range(2)]
    assert digests == sorted([digest("listed.test"), digest("b.test")])
    for d in digests:
        p = struct.unpack(">H", d[:2])[0]
        below = struct.unpack_from(">I", data, FANOUT_OFFSET + 4 * (p - 1))[0] if p else 0
        upto = struct.unpack_from(">I", data, FANOUT_OFFSET + 4 * p)[0]
        assert below <= digests.index(d) < upto


def test_plugin_reader_matches_the_resolver_matcher(tmp_path: Path) -> None:
    rnd = random.Random(5)
    listed = random_domains(rnd, 3000)
    state = list_state(listed, urls=[f"{d}/p/" for d in listed[:50]])
    path = tmp_path / INDEX_FILE
    path.write_bytes(b"".join(encode_index(state, 1, 0)))
    index = plugin.Index(str(path))
    matcher = Matcher(state)
    names = [d.encode() for d in listed[:500]]
    names += [b"www." + n for n in names[:200]] + [b"x" + n for n in names[:200]]
    names += [d.encode() for d in random_domains(rnd, 1000)] + [b"test", b"", b"a..b.test"]
    for name in names:
        assert index.listed(name) == (matcher.match(name) >= 0), name
    # The suffixes the plugin hashes are the protocol's (blocklist.digests), nothing more.
    hashed: list[bytes] = []
    original = plugin.hashlib.sha256
    plugin.hashlib.sha256 = lambda b: hashed.append(bytes(b)) or original(b)
    try:
        plugin.Index.listed(index, b"a.b.c.test")
    finally:
        plugin.hashlib.sha256 = original
    assert [digest(s.decode()) for s in hashed] == query_digests("A.B.C.test.")


def test_only_domain_entries_reach_the_index() -> None:
    entries = [
        Entry.from_value("listed.test", 1, Kind.DOMAIN),
        Entry.from_value("shared.test/path/", 2, Kind.URL),
        Entry.from_value("shared.test", 3, Kind.URLHOST),
    ]
    data = b"".join(encode_index(ListState.from_entries(entries), 1, 0))
    assert check_index(data).count == 1
    assert data[DIGESTS_OFFSET : DIGESTS_OFFSET + 32] == digest("listed.test")


def test_empty_list(tmp_path: Path) -> None:
    path = tmp_path / INDEX_FILE
    path.write_bytes(b"".join(encode_index(list_state([]), 3, 0)))
    assert check_index(path.read_bytes()).count == 0
    assert not plugin.Index(str(path)).listed(b"anything.test")


def damaged_variants(good: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(good)
    flipped[DIGESTS_OFFSET + 5] ^= 1
    magic = b"XXXX" + good[4:]
    version = good[:4] + b"\x00\x02" + good[6:]
    head = bytearray(good)
    head[9] ^= 1  # the serial, inside the checked bytes
    return {
        "truncated": (good[:100], "too short"),
        "cut": (good[:-1], "size does not match"),
        "flipped digest": (bytes(flipped), "integrity check failed"),
        "flipped header": (bytes(head), "integrity check failed"),
        "magic": (magic, "not a Cordon index"),
        "version": (version, "unsupported index version"),
        "extra": (good + b"\x00" * 32, "size does not match"),
    }


def test_damaged_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    good = b"".join(encode_index(list_state(["listed.test"]), 2, 0))
    for what, (data, reason) in damaged_variants(good).items():
        with pytest.raises(ArtefactError, match=reason):
            check_index(data, "index.bin")
        path = tmp_path / f"{what}.bin"
        path.write_bytes(data)
        with pytest.raises(plugin.IndexError_, match=reason):
            plugin.Index(str(path))


def test_enforcer_keeps_the_list_in_force_when_a_new_file_is_damaged(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    write_index(state_dir, write_list(state_dir, ["listed.test"], 1))
    settings = tmp_path / "cordon.toml"
    settings.write_text(f'index = "{state_dir / INDEX_FILE}"\nipv4 = ["192.0.2.80"]\n')
    logs: list[str] = []
    enforcer = plugin.Enforcer(plugin.Settings(str(settings)), logs.append)
    assert enforcer.listed(b"www.listed.test") and enforcer.index.serial == 1
    good = (state_dir / INDEX_FILE).read_bytes()
    for what, (data, reason) in damaged_variants(good).items():
        tmp = state_dir / "tmp"
        tmp.write_bytes(data)
        os.replace(tmp, state_dir / INDEX_FILE)
        assert not enforcer.reload(), what
        assert reason in logs[-1] and "keeping the list in force" in logs[-1]
        assert enforcer.listed(b"www.listed.test") and enforcer.index.serial == 1
    write_index(state_dir, write_list(state_dir, ["other.test"], 2))
    assert enforcer.reload() and enforcer.index.serial == 2
    assert enforcer.listed(b"other.test") and not enforcer.listed(b"listed.test")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ipv4 = ["192.0.2.80"]\n', "index: give the path"),
        ('index = "/x"\nipv4 = ["2001:db8::1"]\n', "ipv4: 2001:db8::1 is not an IPv4"),
        ('index = "/x"\nipv6 = ["nonsense"]\n', "ipv6: 'nonsense' is not an address"),
        ('index = "/x"\nttl = -1\n', "ttl: -1 is not within"),
        ('index = "/x"\ncache_horizon = "3"\n', "cache_horizon: a number"),
        ('index = "/x"\nstop = 1\n', "unknown setting 'stop'"),
        ('index = "/x\n', "cordon.toml"),
    ],
)
def test_settings_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cordon.toml"
    path.write_text(text)
    with pytest.raises(plugin.SettingsError, match=message) as err:
        plugin.Settings(str(path))
    assert str(path) in str(err.value)


async def test_follower_subscriber_writes_the_index_next_to_the_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    verified = write_list(state_dir, ["listed.test", "two.test"], 4)
    await index_subscriber(state_dir)(verified)
    info = check_index((state_dir / INDEX_FILE).read_bytes())
    assert (info.serial, info.count, info.state_checksum) == (4, 2, verified.checksum)
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
