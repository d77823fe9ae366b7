"""The RPZ feed end to end with real peers on loopback: an authority publishes, the sync
follower (plain edition) persists, `python -m resolver.rpz.cli serve` serves the zone, and real
Unbound and BIND take it as secondaries (BIND with TSIG; Unbound 1.17 cannot sign transfers,
so it transfers unsigned from an address in rpz.transfer.unsigned_allow). Checks go through dig.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.tsig
import dns.xfr
import dns.zone
import pytest
from authority_fixtures import RunningAuthority, start_authority
from rpz_fixtures import (
    STOP_HOST,
    UPSTREAM_V4,
    Peer,
    StaticUpstream,
    bind_peer,
    blocked,
    dig,
    free_port,
    soa_serial,
    unbound_peer,
    wait_for,
)

from blocklist.config import validate_config
from blocklist.sync.config import SyncConfig
from blocklist.sync.follower import Follower
from signing import format_public_key

REPO = Path(__file__).resolve().parent.parent
ZONE = "rpz.cordon.example."
SECRET = base64.b64encode(os.urandom(32)).decode()
KEY = dns.tsig.Key("cordon-rpz.", SECRET, "hmac-sha256")
CONVERGE = 30.0  # generous bound for NOTIFY -> IXFR -> rewrite; typical is well under a second

pytestmark = pytest.mark.tools("unbound", "named", "dig")


# ------------------------------------------------------------------------------- harness


async def add_and_approve(api: RunningAuthority, value: str) -> int:
    status, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "c"}
    )
    assert status in (200, 201), body
    status, body2 = await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
    assert status == 200, body2
    return body["id"]


async def publish(api: RunningAuthority) -> int:
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200, body
    return body["serial"]


async def delist(api: RunningAuthority, entry_id: int) -> None:
    status, body = await api.call(
        "alice", "POST", f"/v1/entries/{entry_id}/delist", {"reason": "removed at source"}
    )
    assert status == 202, body
    status, body = await api.call("bob", "POST", f"/v1/entries/{entry_id}/delist/confirm")
    assert status == 200, body


@dataclass
class Feed:
    api: RunningAuthority
    follower: Follower
    server: subprocess.Popen
    port: int
    metrics_port: int
    upstream: StaticUpstream
    tmp: Path
    ids: dict[str, int]
    peer_ports: dict[str, int]

    async def publish(self, add: list[str] = (), remove: list[str] = ()) -> int:
        """An authority publication, then the follower's update (as `resolver sync` does)."""
        for value in add:
            self.ids[value] = await add_and_approve(self.api, value)
        for value in remove:
            await delist(self.api, self.ids.pop(value))
        serial = await publish(self.api)
        await self.follower.poll_once()
        assert self.follower.current.serial == serial
        # The server picks state.bin up within rpz.list_poll_interval.
        await asyncio.to_thread(wait_for, lambda: soa_serial(self.port, ZONE) == serial, 20, 0.05)
        return serial

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.escape(name + ("{" + want + "}" if want else "")) + r" ([0-9.e+]+)"
        m = re.search(pattern, text)
        assert m is not None, f"no metric {name}{labels} in:\n{text}"
        return float(m.group(1))

    def log(self) -> str:
        return (self.tmp / "rpz.log").read_text(errors="replace")[-5000:]


@contextlib.asynccontextmanager
async def feed(
    tmp_path: Path, initial: list[str], peers: tuple[str, ...], history: int = 64
) -> AsyncIterator[Feed]:
    api = await start_authority(tmp_path / "authority")
    upstream = StaticUpstream()
    server = None
    follower = None
    try:
        ids = {v: await add_and_approve(api, v) for v in initial}
        await add_and_approve(api, "http://shared.example/album/1")  # a URL entry: not in RPZ
        await publish(api)
        state_dir = tmp_path / "sync-state"
        data = {
            "sync": {
                "authority_url": str(api.client.make_url("")).rstrip("/"),
                "token": api.tokens["isp-plain"],
                "root_keys": [format_public_key(api.root)],
                "state_dir": str(state_dir),
                "edition": "plain",
                "instance": "rpz-1",
                "request_timeout": 5,
            }
        }
        follower = Follower(validate_config(data, SyncConfig, "test"))
        await follower.poll_once()
        port, metrics_port = free_port(), free_port()
        peer_ports = {kind: free_port() for kind in peers}
        targets = ", ".join(f'"127.0.0.1:{p}"' for p in peer_ports.values())
        (tmp_path / "tsig.key").write_text(SECRET + "\n")
        toml = tmp_path / "rpz.toml"
        toml.write_text(
            f"""[sync]
root_keys = ["{format_public_key(api.root)}"]
edition = "plain"
state_dir = "{state_dir}"

[rpz]
zone = "{ZONE}"
action = "cname"
cname_target = "{STOP_HOST}"
listen = ["127.0.0.1"]
port = {port}
history = {history}
list_poll_interval = 0.1

[rpz.transfer]
tsig_secret_file = "tsig.key"
# Unbound 1.17 cannot sign zone transfers: it may transfer unsigned from its address only.
unsigned_allow = ["127.0.0.1/32"]
allow_loopback = true

[rpz.notify]
targets = [{targets}]
timeout = 0.5

[rpz.metrics]
port = {metrics_port}
"""
        )
        with open(tmp_path / "rpz.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "resolver.rpz.cli", "serve", "--config", str(toml)],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        running = Feed(
            api, follower, server, port, metrics_port, upstream, tmp_path, ids, peer_ports
        )
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(soa_serial, port, ZONE) is None:
            assert server.poll() is None, running.log()
            assert time.monotonic() < deadline, running.log()
            await asyncio.sleep(0.1)
        yield running
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if follower is not None:
            await follower.close()
        upstream.close()
        await api.client.close()


async def start_peers(f: Feed) -> dict[str, Peer]:
    peers: dict[str, Peer] = {}
    ports = f.peer_ports
    for kind in ports:
        if kind == "unbound":
            peer = unbound_peer(f.tmp / "unbound", ZONE, f.port, f.upstream.port, port=ports[kind])
        else:
            peer = bind_peer(
                f.tmp / "bind",
                ZONE,
                f.port,
                f.upstream.port,
                key_name="cordon-rpz.",
                secret_b64=SECRET,
                port=ports[kind],
            )
        await asyncio.to_thread(peer.start)
        peers[kind] = peer
    return peers


async def converge(peers: dict[str, Peer], check, what: str) -> None:
    for kind, peer in peers.items():
        try:
            await asyncio.to_thread(wait_for, lambda p=peer: check(p.port), CONVERGE, 0.1)
        except TimeoutError:
            pytest.fail(f"{kind} did not converge ({what}) within {CONVERGE}s:\n{peer.log()}")


def rewritten(port: int, name: str) -> bool:
    return blocked(dig(port, name))


def resolves_normally(port: int, name: str) -> bool:
    return dig(port, name) == [UPSTREAM_V4]


# --------------------------------------------------------------------------------- tests


async def test_bind_and_unbound_follow_publications_by_notify_and_ixfr(tmp_path: Path) -> None:
    initial = ["blocked.example", "old.test", "keep.test"]
    async with feed(tmp_path, initial, ("unbound", "bind")) as f:
        peers = await start_peers(f)
        try:
            serial = f.follower.current.serial
            await converge(peers, lambda p: soa_serial(p, ZONE) == serial, "first transfer")
            for kind, peer in peers.items():
                for name in ("blocked.example", "www.blocked.example", "a.b.old.test"):
                    answer = await asyncio.to_thread(dig, peer.port, name)
                    assert answer and answer[0] == STOP_HOST, (kind, name, answer)
                # Names not listed, and the URL entry's host, resolve as usual.
                for name in ("fine.example", "new.test", "shared.example"):
                    assert await asyncio.to_thread(resolves_normally, peer.port, name), (kind, name)
            assert f.metric("cordon_rpz_skipped_entries", reason="url") == 1
            axfr_before = f.metric("cordon_rpz_answers_total", kind="axfr")

            # One publication: a new entry and a delisted one reach both resolvers.
            new_serial = await f.publish(add=["new.test"], remove=["old.test"])
            await converge(
                peers,
                lambda p: (
                    rewritten(p, "x.new.test")
                    and resolves_normally(p, "a.b.old.test")
                    and rewritten(p, "new.test")
                ),
                "add new.test, delist old.test",
            )
            for kind, peer in peers.items():
                assert soa_serial(peer.port, ZONE) == new_serial, kind
                assert rewritten(peer.port, "keep.test") and rewritten(peer.port, "blocked.example")
            # Both came by IXFR after NOTIFY, not by a new full transfer.
            assert f.metric("cordon_rpz_answers_total", kind="ixfr") >= 2
            assert f.metric("cordon_rpz_answers_total", kind="ixfr_full") == 0
            assert f.metric("cordon_rpz_answers_total", kind="axfr") == axfr_before
            acked = sum(
                f.metric("cordon_rpz_notify_total", target=f"127.0.0.1:{p.port}", result="acked")
                for p in peers.values()
            )
            assert acked >= 2

            # The real server refuses transfers without TSIG or with a wrong key from any host
            # not in unsigned_allow (this client connects from 127.0.0.2).
            for key in (
                None,
                dns.tsig.Key("cordon-rpz.", base64.b64encode(b"k" * 32), "hmac-sha256"),
            ):
                zone = dns.zone.Zone(ZONE, relativize=False)
                query, _ = dns.xfr.make_query(zone, keyring=key)
                with pytest.raises((dns.xfr.TransferError, dns.tsig.PeerError)):
                    await dns.asyncquery.inbound_xfr(
                        "127.0.0.1", zone, query, port=f.port, timeout=5, source="127.0.0.2"
                    )
            zone = dns.zone.Zone(ZONE, relativize=False)
            query, _ = dns.xfr.make_query(zone, keyring=KEY)
            await dns.asyncquery.inbound_xfr(
                "127.0.0.1", zone, query, port=f.port, timeout=5, source="127.0.0.2"
            )
            assert zone.get_soa().serial == new_serial
        finally:
            for peer in peers.values():
                peer.stop()


async def test_history_gap_falls_back_to_a_full_transfer(tmp_path: Path) -> None:
    async with feed(tmp_path, ["one.example", "two.example"], ("unbound",), history=2) as f:
        peers = await start_peers(f)
        unbound = peers["unbound"]
        try:
            first = f.follower.current.serial
            await converge(peers, lambda p: soa_serial(p, ZONE) == first, "first transfer")
            assert rewritten(unbound.port, "two.example")
            # Unbound goes away (its copy stays in its zone file) while three serials pass: the
            # server keeps two diffs, so Unbound's serial falls out of the history.
            unbound.stop()
            await f.publish(add=["three.example"])
            await f.publish(remove=["two.example"])
            last = await f.publish(add=["four.example"])
            await asyncio.to_thread(unbound.start)
            await converge(
                peers,
                lambda p: (
                    soa_serial(p, ZONE) == last
                    and rewritten(p, "www.four.example")
                    and rewritten(p, "three.example")
                    and resolves_normally(p, "two.example")
                ),
                "catch up across the gap",
            )
            assert f.metric("cordon_rpz_answers_total", kind="ixfr_full") >= 1
            assert rewritten(unbound.port, "one.example")
        finally:
            unbound.stop()
