#!/usr/bin/env python3
"""RPZ feed: publish-to-enforced latency per resolver, IXFR size per change, 1M-entry AXFR,
PowerDNS polling cost and Knot Resolver reload stall.

Usage: python bench/rpz.py [--updates 10] [--entries 1000000] [--poll 0.2] [--skip-large]
       [--pdns-refresh 10] [--pdns-packetcache 10] [--pdns-seconds 30]
       [--kresd-entries 100000,1000000] [--only kresd|pdns|propagation]

1. Propagation. A real authority (tests/authority_fixtures.py, aiohttp on loopback) publishes;
   a sync follower runs its own long-poll loop (`Follower.run`, plain edition) and writes
   state.bin; `python -m resolver.rpz.cli serve` (a separate process, rpz.list_poll_interval =
   --poll) rebuilds the zone and sends NOTIFY; real Unbound (unsigned transfers) and BIND (TSIG)
   take the change by IXFR. Each of --updates publications adds one entry and delists one; the
   clock starts when the publish request is sent and stops, per resolver, when a dnspython query
   sees the new name rewritten (CNAME to the stop host) and the delisted one resolve normally.
   BIND runs with `min-update-interval 0` (its default of 60 s batches RPZ updates).
   PowerDNS Recursor 4.8 (TSIG, no NOTIFY: it polls every --pdns-refresh s, packet cache
   --pdns-packetcache s, the new name looked up just before each publish so its allowed answer
   sits in the packet cache) and Knot Resolver 5.6 (the file `rpz export --for kresd --follow`
   keeps current) are measured in the same loop; each publish happens at a random point of
   PowerDNS's refresh cycle.
2. IXFR size. The server's own transfer byte counters during (1), per changed entry, and a
   dnspython IXFR (TSIG) for diffs of 1, 10, 100 and 1000 entries against an in-process server.
3. AXFR of --entries entries (2 records each, CNAME action) from the server process, with
   dnspython as the client: it builds and TSIG-signs the query and validates every message's
   TSIG chain (dns.tsig) while records are counted from the headers; the same against BIND
   serving the same zone (from `resolver rpz export`) as a primary, for a ratio. dnspython's own
   `dns.query.xfr`, which turns every record into objects, is timed on the first 100k records
   and extrapolated: its parser, not the server, is then the bottleneck.
4. Knot Resolver re-reading a --kresd-entries export: the longest answer to a cached name
   (queried back to back) while kresd re-parses the file, i.e. the stall its clients see.
5. PowerDNS polling cost: one recursor with refresh = 1 s for --pdns-seconds against the server:
   TCP IXFR checks per minute, server CPU per check, TCP connections held (sampled with ss).
Only loopback is used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "tests"))

import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.query  # noqa: E402
import dns.rdata  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.tsig  # noqa: E402
import dns.wire  # noqa: E402
import dns.xfr  # noqa: E402
import dns.zone  # noqa: E402
from rpz_fixtures import (  # noqa: E402
    ROOT_PUB,
    STOP_HOST,
    STOP_V4,
    UPSTREAM_V4,
    Peer,
    StaticUpstream,
    binary,
    bind_peer,
    free_port,
    soa_serial,
    unbound_peer,
    wait_for,
    write_list,
)
from rpz_waits import wait_serial  # noqa: E402

from blocklist.config import validate_config  # noqa: E402
from blocklist.state import Entry, Kind, ListState  # noqa: E402
from blocklist.sync.config import SyncConfig  # noqa: E402
from blocklist.sync.follower import Follower  # noqa: E402

ZONE = "rpz.cordon.example."
ORIGIN = dns.name.from_text(ZONE)
SECRET = base64.b64encode(os.urandom(32)).decode()
KEY = dns.tsig.Key("cordon-rpz.", SECRET, "hmac-sha256")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def rpz_toml(directory: Path, state_dir: Path, port: int, metrics: int, **extra) -> Path:
    (directory / "tsig.key").write_text(SECRET + "\n")
    targets = ", ".join(f'"127.0.0.1:{p}"' for p in extra.get("notify", []))
    path = directory / "rpz.toml"
    path.write_text(
        f"""[sync]
root_keys = ["{extra.get("root", ROOT_PUB)}"]
edition = "plain"
state_dir = "{state_dir}"
max_entries = 20000000

[rpz]
zone = "{ZONE}"
cname_target = "{STOP_HOST}"
ipv4 = "{STOP_V4}"
port = {port}
list_poll_interval = {extra.get("poll", 0.2)}
history = 64

[rpz.transfer]
tsig_secret_file = "tsig.key"
unsigned_allow = ["127.0.0.1/32"]
message_size = {extra.get("message_size", 16384)}

[rpz.notify]
targets = [{targets}]
timeout = 0.5

[rpz.metrics]
port = {metrics}
"""
    )
    return path


class Server:
    """`python -m resolver.rpz.cli serve` as a child process."""

    def __init__(self, toml: Path, port: int, metrics: int, log: Path) -> None:
        self.port, self.metrics_port = port, metrics
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "resolver.rpz.cli", "serve", "--config", str(toml)],
                cwd=ROOT_DIR,
                env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.log = log

    def wait_serial(self, serial: int | None, timeout: float = 600) -> float:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            got = soa_serial(self.port, ZONE)
            return got is not None and (serial is None or got == serial)

        return wait_for(ready, timeout, 0.1)

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        m = re.search(re.escape(name + ("{" + want + "}" if want else "")) + r" ([0-9.e+]+)", text)
        return float(m.group(1)) if m else 0.0

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def query_a(port: int, name: str) -> dns.message.Message | None:
    q = dns.message.make_query(name, "A")
    try:
        return dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
    except Exception:
        return None


def server_serial(port: int) -> int | None:
    try:
        r = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=1)
    except Exception:
        return None
    return r.answer[0][0].serial if r.answer else None


def is_rewritten(port: int, name: str) -> bool:
    """CNAME to the stop host (cname action) or the stop page address (kresd's local data)."""
    r = query_a(port, name)
    return bool(r and r.answer and r.answer[0].rdtype == dns.rdatatype.CNAME) or is_stop(r)


def is_normal(port: int, name: str) -> bool:
    r = query_a(port, name)
    return bool(
        r
        and len(r.answer) == 1
        and r.answer[0].rdtype == dns.rdatatype.A
        and r.answer[0][0].address == UPSTREAM_V4
    )


# -------------------------------------------------------------------------- 1. propagation


async def bench_propagation(
    tmp: Path, updates: int, poll: float, pdns_refresh: int, pdns_packetcache: int
) -> dict:
    from authority_fixtures import start_authority
    from rpz_peers_support import kresd_peer, pdns_peer

    from signing import format_public_key

    api = await start_authority(tmp / "authority")
    upstream = StaticUpstream(ttl=3600)  # long TTLs: caches hold answers for real
    peers: list[Peer] = []
    server = None
    exporter = None
    follower = None
    task = None
    try:

        async def add(value: str) -> int:
            _, body = await api.call(
                "alice",
                "POST",
                "/v1/entries",
                {"value": value, "hosting_country": "NL", "evidence": "bench"},
            )
            await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
            return body["id"]

        ids = {f"seed-{i}.example": await add(f"seed-{i}.example") for i in range(50)}
        await api.call("alice", "POST", "/v1/publish")
        state_dir = tmp / "sync-state"
        root = format_public_key(api.root)
        sync = {
            "sync": {
                "authority_url": str(api.client.make_url("")).rstrip("/"),
                "token": api.tokens["isp-plain"],
                "root_keys": [root],
                "state_dir": str(state_dir),
                "edition": "plain",
                "long_poll_seconds": 30,
            }
        }
        follower = Follower(validate_config(sync, SyncConfig, "bench"))
        await follower.poll_once()
        port, metrics = free_port(), free_port()
        ub_port, bind_port = free_port(), free_port()
        toml = rpz_toml(
            tmp, state_dir, port, metrics, notify=[ub_port, bind_port], poll=poll, root=root
        )
        server = Server(toml, port, metrics, tmp / "rpz.log")
        zone_file = tmp / "kresd-rpz.zone"
        with open(tmp / "export.log", "wb") as err:
            exporter = subprocess.Popen(
                [
                    *(sys.executable, "-m", "resolver.rpz.cli", "export", "--config", str(toml)),
                    *("--for", "kresd", "--follow", "--output", str(zone_file)),
                ],
                cwd=ROOT_DIR,
                env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        await asyncio.to_thread(server.wait_serial, None, 30)
        await asyncio.to_thread(wait_for, zone_file.exists, 30)
        unbound = unbound_peer(tmp / "unbound", ZONE, port, upstream.port, port=ub_port)
        bind = bind_peer(
            tmp / "bind",
            ZONE,
            port,
            upstream.port,
            key_name="cordon-rpz.",
            secret_b64=SECRET,
            port=bind_port,
        )
        pdns = pdns_peer(
            tmp / "pdns",
            ZONE,
            port,
            upstream.port,
            key_name="cordon-rpz.",
            secret_b64=SECRET,
            refresh=pdns_refresh,
            packetcache_ttl=pdns_packetcache,
        )
        kresd = kresd_peer(tmp / "kresd", zone_file, upstream.port)
        for peer in (unbound, bind, pdns, kresd):
            await asyncio.to_thread(peer.start)
            peers.append(peer)
        serial = follower.current.serial
        for peer in (unbound, bind):
            await asyncio.to_thread(wait_for, lambda p=peer: soa_serial(p.port, ZONE) == serial, 30)
        for peer in (pdns, kresd):
            await asyncio.to_thread(
                wait_for, lambda p=peer: is_rewritten(p.port, "seed-1.example"), 60
            )
        task = asyncio.create_task(follower.run())  # long-poll, as `resolver sync` runs
        times: dict[str, list[float]] = {p.kind: [] for p in peers} | {"server": []}
        ixfr_bytes0 = server.metric("cordon_rpz_transfer_bytes_total", kind="ixfr")
        ixfr_count0 = server.metric("cordon_rpz_answers_total", kind="ixfr")
        seeds = list(ids)
        for i in range(updates):
            new = f"new-{i}.test"
            old = seeds[i]
            for peer in peers:  # warm the caches first (PowerDNS's packet cache holds it)
                await asyncio.to_thread(is_normal, peer.port, "www." + new)
            ids[new] = await add(new)
            await api.call("alice", "POST", f"/v1/entries/{ids[old]}/delist", {"reason": "gone"})
            await api.call("bob", "POST", f"/v1/entries/{ids[old]}/delist/confirm")
            start = time.monotonic()
            await api.call("alice", "POST", "/v1/publish")

            def seen_server(start: float = start, n: int = serial + i + 1) -> float:
                wait_for(lambda: server_serial(port) == n, 30, 0.005)
                return time.monotonic() - start

            def seen(p: int, start: float = start, new: str = new, old: str = old) -> float:
                wait_for(lambda: is_rewritten(p, "www." + new) and is_normal(p, old), 120, 0.01)
                return time.monotonic() - start

            results = await asyncio.gather(
                asyncio.to_thread(seen_server),
                *(asyncio.to_thread(seen, peer.port) for peer in peers),
            )
            times["server"].append(results[0])
            for peer, t in zip(peers, results[1:], strict=True):
                times[peer.kind].append(t)
            # Publish at a random point of PowerDNS's refresh cycle, not in step with it.
            await asyncio.sleep(0.3 + random.uniform(0, pdns_refresh))
        ixfrs = server.metric("cordon_rpz_answers_total", kind="ixfr") - ixfr_count0
        ixfr_bytes = server.metric("cordon_rpz_transfer_bytes_total", kind="ixfr") - ixfr_bytes0
        return {
            "times": times,
            "ixfrs": ixfrs,
            "ixfr_bytes": ixfr_bytes,
            "full": server.metric("cordon_rpz_answers_total", kind="ixfr_full"),
        }
    finally:
        if task is not None:
            follower.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        if follower is not None:
            await follower.close()
        for peer in peers:
            peer.stop()
        if server is not None:
            server.stop()
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        upstream.close()
        await api.client.close()


# -------------------------------------------------------------------------- 2. IXFR sizes


def ixfr_size(port: int, q: dns.message.Message) -> int:
    """Bytes on the wire (with framing) of a one-diff IXFR answer, checked by dnspython."""
    size = soas = 0
    wire = q.to_wire()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        r = s.makefile("rb")
        ctx = None
        while soas < 4:  # current, old, new, current
            n = struct.unpack("!H", r.read(2))[0]
            data = r.read(n)
            size += n + 2
            msg = dns.message.from_wire(
                data,
                keyring=KEY,
                request_mac=q.mac,
                xfr=True,
                tsig_ctx=ctx,
                multi=True,
                one_rr_per_rrset=True,
            )
            ctx = msg.tsig_ctx
            soas += sum(1 for rr in msg.answer if rr.rdtype == dns.rdatatype.SOA)
    return size


async def bench_ixfr_sizes(tmp: Path) -> list[tuple[int, int, int]]:
    from resolver.rpz.config import RpzConfig
    from resolver.rpz.service import RpzService

    tmp.mkdir(parents=True, exist_ok=True)
    state_dir = tmp / "ixfr-state"
    (tmp / "ixfr.key").write_text(SECRET)
    config = validate_config(
        {
            "sync": {"root_keys": [ROOT_PUB], "state_dir": str(state_dir), "edition": "plain"},
            "rpz": {
                "zone": ZONE,
                "port": 0,
                "list_poll_interval": 0.05,
                "transfer": {"tsig_secret_file": str(tmp / "ixfr.key")},
                "metrics": {"enabled": False},
            },
        },
        RpzConfig,
        "bench",
    )
    base = [f"site-{i}.blocked-{i % 97}.example" for i in range(5000)]
    write_list(state_dir, base, serial=1)
    out = []
    svc = RpzService(config, "bench")
    await svc.start()
    try:
        serial = 1
        current = list(base)
        for changes in (1, 10, 100, 1000):
            half = max(1, changes // 2)
            removed = current[:half] if changes > 1 else []
            added = [f"added-{serial}-{i}.example" for i in range(changes - len(removed))]
            current = current[len(removed) :] + added
            zone = dns.zone.Zone(ORIGIN, relativize=False)
            q, _ = dns.xfr.make_query(zone, serial=serial, keyring=KEY)
            serial += 1
            write_list(state_dir, current, serial=serial)
            await wait_serial(svc, serial)
            size = await asyncio.to_thread(ixfr_size, svc.port, q)
            out.append((changes, size, len(removed) + len(added)))
    finally:
        await svc.stop()
    return out


# ---------------------------------------------------------------------------- 3. big AXFR


def make_big_state(n: int, extra: tuple[str, ...] = ()) -> ListState:
    entries = [
        Entry.from_value(f"site-{i}.blocked-{i % 997}.example", i + 1, Kind.DOMAIN)
        for i in range(n)
    ]
    entries += [Entry.from_value(v, n + 1 + i, Kind.DOMAIN) for i, v in enumerate(extra)]
    return ListState.from_entries(entries, plain=True)


def axfr_wire(
    port: int, key: dns.tsig.Key | None, expected_rrs: int
) -> tuple[float, int, int, int]:
    """AXFR with dnspython building and signing the query and validating every message's TSIG
    (dns.tsig.validate over the raw bytes); records are counted from the headers rather than
    turned into objects. (seconds, messages, records, bytes)"""
    q = dns.message.make_query(ORIGIN, dns.rdatatype.AXFR)
    if key is not None:
        q.use_tsig(key)
    wire = q.to_wire()
    start = time.monotonic()
    msgs = rrs = size = 0
    ctx = None
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        r = s.makefile("rb", buffering=1 << 20)
        while rrs < expected_rrs:
            head = r.read(2)
            if len(head) < 2:
                raise RuntimeError(f"transfer ended early after {rrs} records")
            n = struct.unpack("!H", head)[0]
            data = r.read(n)
            if data[3] & 0x0F:
                raise RuntimeError(f"transfer failed: rcode {data[3] & 0x0F}")
            msgs += 1
            size += n + 2
            rrs += struct.unpack_from("!H", data, 6)[0]
            if key is not None:
                ctx = validate_tsig(data, key, q.mac, ctx)
    return time.monotonic() - start, msgs, rrs, size


def validate_tsig(data: bytes, key: dns.tsig.Key, request_mac: bytes, ctx):
    """Validate the TSIG record that ends `data` (its MAC covers the whole message and the
    previous MAC), with dnspython's dns.tsig, without parsing the other records."""
    owner = key.name.to_wire()
    start = data.rfind(owner + struct.pack("!HH", dns.rdatatype.TSIG, dns.rdataclass.ANY))
    if start < 0:
        raise RuntimeError("message without TSIG")
    rd_start = start + len(owner) + 10
    rdlen = struct.unpack_from("!H", data, rd_start - 2)[0]
    parser = dns.wire.Parser(data[rd_start : rd_start + rdlen])
    rdata = dns.rdata.from_wire_parser(dns.rdataclass.ANY, dns.rdatatype.TSIG, parser)
    now = int(time.time())
    return dns.tsig.validate(data, key, key.name, rdata, now, request_mac, start, ctx, True)


def axfr_parsed(port: int, key: dns.tsig.Key, limit_rrs: int) -> tuple[float, int]:
    """dnspython's own AXFR client (dns.query.xfr): every record becomes a dnspython object.
    Stops after `limit_rrs` records; returns (seconds, records)."""
    start = time.monotonic()
    count = 0
    for msg in dns.query.xfr("127.0.0.1", ORIGIN, port=port, keyring=key, lifetime=600):
        count += sum(len(rr) for rr in msg.answer)
        if count >= limit_rrs:
            break
    return time.monotonic() - start, count


def bench_big_axfr(tmp: Path, n: int, message_size: int) -> dict:
    out: dict = {"entries": n}
    t0 = time.monotonic()
    state = make_big_state(n)
    tmp.mkdir(parents=True, exist_ok=True)
    state_dir = tmp / "big-state"
    write_list(state_dir, state=state, serial=1)
    out["make_list_s"] = time.monotonic() - t0
    port, metrics = free_port(), free_port()
    toml = rpz_toml(tmp, state_dir, port, metrics, message_size=message_size)
    t0 = time.monotonic()
    server = Server(toml, port, metrics, tmp / "big-rpz.log")
    try:
        server.wait_serial(1, 600)
        out["server_load_s"] = time.monotonic() - t0
        for label, key in (("tsig", KEY), ("unsigned", None)):
            secs, msgs, rrs, size = axfr_wire(port, key, 2 * n + 3)
            out[f"axfr_{label}"] = (secs, msgs, rrs, size)
        out["server_rss_mb"] = server.rss_mb()
        secs, count = axfr_parsed(port, KEY, 100_000)
        out["parsed"] = (secs, count)
        # Peer: BIND as primary for the same zone, loaded from `resolver rpz export`.
        zone_file = tmp / "big.zone"
        t0 = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "resolver.rpz.cli",
                "export",
                "--config",
                str(toml),
                "--output",
                str(zone_file),
            ],
            cwd=ROOT_DIR,
            env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
            check=True,
            capture_output=True,
        )
        out["export_s"] = time.monotonic() - t0
        out["export_mb"] = zone_file.stat().st_size / 1e6
    finally:
        server.stop()
    out["bind"] = bind_primary_axfr(tmp / "bind-primary", zone_file, 2 * n + 3)
    return out


def bind_primary_axfr(
    workdir: Path, zone_file: Path, expected_rrs: int
) -> tuple[float, int, int, int, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "named.conf"
    conf.write_text(
        f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    allow-transfer {{ key "cordon-rpz."; }};
}};
controls {{ }};
key "cordon-rpz." {{ algorithm hmac-sha256; secret "{SECRET}"; }};
zone "{ZONE}" {{ type primary; file "{zone_file}"; }};
"""
    )
    argv = [binary("named"), "-g", "-c", str(conf), "-n", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    peer = Peer("bind-primary", port, workdir, log_path=workdir / "named.log", argv=argv)
    t0 = time.monotonic()
    peer.start(timeout=900)  # named answers only once the zone is loaded
    try:
        wait_for(lambda: soa_serial(port, ZONE) is not None, 600, 0.2)
        load = time.monotonic() - t0
        secs, msgs, rrs, size = axfr_wire(port, KEY, expected_rrs)
        return secs, msgs, rrs, size, load
    finally:
        peer.stop()


# ------------------------------------------------------------- 4. Knot Resolver reload stall


def rss_mb(pid: int, field: str = "VmRSS:") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_kresd_reload(tmp: Path, n: int) -> dict:
    """kresd answering a cached name every few ms while it re-reads an n-entry export: the
    longest answer is the stall every client of that kresd process sees."""
    from rpz_peers_support import kresd_peer

    from resolver.rpz.config import load_rpz_config
    from resolver.rpz.export import export_settings, write_zone_file
    from resolver.rpz.zone import build_version

    tmp.mkdir(parents=True)
    state = make_big_state(n)
    toml = rpz_toml(tmp, tmp / "state", 0, 0, root=ROOT_PUB)
    settings = export_settings(load_rpz_config(toml), "kresd")
    zone_file = tmp / "rpz.zone"
    t = time.monotonic()
    write_zone_file(zone_file, build_version(state, 1, settings), settings)
    export_s = time.monotonic() - t
    upstream = StaticUpstream(ttl=3600)
    peer = kresd_peer(tmp / "kresd", zone_file, upstream.port)
    try:
        t = time.monotonic()
        peer.start(timeout=1800)
        start_s = time.monotonic() - t
        rss = rss_mb(peer.proc.pid)
        assert query_a(peer.port, "fine.example") is not None  # now cached
        longest = [0.0]
        answered = [0]
        stop = [False]

        def probe() -> None:
            q = dns.message.make_query("fine.example", "A")
            while not stop[0]:
                t0 = time.monotonic()
                try:
                    dns.query.udp(q, "127.0.0.1", port=peer.port, timeout=120)
                except Exception:
                    continue
                longest[0] = max(longest[0], time.monotonic() - t0)
                answered[0] += 1
                time.sleep(0.002)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        wait_for(lambda: answered[0] > 50, 30)
        baseline = longest[0]
        bigger = make_big_state(n, ("late-0.example",))
        t = time.monotonic()
        write_zone_file(zone_file, build_version(bigger, 2, settings), settings)
        written = time.monotonic() - t
        t = time.monotonic()
        wait_for(lambda: is_stop(query_a(peer.port, "late-0.example")), 1800, 0.01)
        enforced = time.monotonic() - t
        stop[0] = True
        thread.join(130)
        return {
            "entries": n,
            "export_s": export_s,
            "start_s": start_s,
            "rss_mb": rss,
            "rss_after_mb": rss_mb(peer.proc.pid),
            "baseline_ms": baseline * 1000,
            "stall_s": longest[0],
            "write_s": written,
            "enforced_s": enforced,
        }
    finally:
        peer.stop()
        upstream.close()


def is_stop(r: dns.message.Message | None) -> bool:
    return bool(r and r.answer and r.answer[-1].rdtype == dns.rdatatype.A) and (
        r.answer[-1][0].address == STOP_V4
    )


# ------------------------------------------------------------ 5. PowerDNS refresh polling cost


def tcp_conns(port: int) -> int:
    out = subprocess.run(
        ["ss", "-Htn", "state", "all", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip() and "LISTEN" not in line)


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_pdns_polling(tmp: Path, seconds: float, entries: int) -> dict:
    """What PowerDNS 4.8's refresh polling costs the primary: one PowerDNS with refresh = 1 s
    for `seconds`; the server's answers by kind, CPU time, and TCP connections sampled."""
    from rpz_peers_support import pdns_peer

    tmp.mkdir(parents=True)
    state_dir = tmp / "state"
    write_list(state_dir, state=make_big_state(entries), serial=1)
    port, metrics = free_port(), free_port()
    server = Server(rpz_toml(tmp, state_dir, port, metrics), port, metrics, tmp / "rpz.log")
    upstream = StaticUpstream()
    peer = pdns_peer(
        tmp / "pdns",
        ZONE,
        port,
        upstream.port,
        key_name="cordon-rpz.",
        secret_b64=SECRET,
        refresh=1,
    )
    try:
        server.wait_serial(1, 120)
        peer.start()
        wait_for(lambda: is_rewritten(peer.port, "site-1.blocked-1.example"), 120, 0.1)
        kinds = ("ixfr_current", "soa", "ixfr", "axfr", "ixfr_full")
        before = {k: server.metric("cordon_rpz_answers_total", kind=k) for k in kinds}
        cpu0 = cpu_s(server.proc.pid)
        samples = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            samples.append(tcp_conns(port))
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        cpu = cpu_s(server.proc.pid) - cpu0
        after = {k: server.metric("cordon_rpz_answers_total", kind=k) for k in kinds}
        checks = after["ixfr_current"] - before["ixfr_current"]
        return {
            "seconds": elapsed,
            "checks": checks,
            "per_min": checks / elapsed * 60,
            "other": {k: after[k] - before[k] for k in kinds if k != "ixfr_current"},
            "cpu_ms_per_check": cpu / max(checks, 1) * 1000,
            "mean_conns": statistics.mean(samples),
            "max_conns": max(samples),
        }
    finally:
        peer.stop()
        server.stop()
        upstream.close()


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--poll", type=float, default=0.2, help="rpz.list_poll_interval")
    parser.add_argument("--message-size", type=int, default=16384, help="rpz.transfer.message_size")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument(
        "--kresd-entries",
        default="100000,1000000",
        help="zone sizes for the Knot Resolver reload stall (comma separated; empty: skip)",
    )
    parser.add_argument("--pdns-refresh", type=int, default=10, help="rpzPrimary refresh")
    parser.add_argument("--pdns-packetcache", type=int, default=10, help="packetcache-ttl")
    parser.add_argument("--pdns-seconds", type=float, default=30, help="PowerDNS polling run")
    parser.add_argument(
        "--only", choices=("kresd", "pdns", "propagation"), help="run only this part"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cordon-rpz-bench-"))
    print(f"# work dir {tmp}")

    if args.only in (None, "pdns"):
        for entries in (1000,):
            c = bench_pdns_polling(tmp / f"pdns-{entries}", args.pdns_seconds, entries)
            print(
                f"\n## PowerDNS 4.8 refresh polling, refresh = 1 s, {entries} entries, no changes"
            )
            print(
                f"   {c['checks']:.0f} TCP IXFR checks in {c['seconds']:.0f} s = "
                f"{c['per_min']:.0f}/min (other answers: {c['other']})"
            )
            print(
                f"   server CPU {c['cpu_ms_per_check']:.2f} ms per check; TCP connections to "
                f"the primary: mean {c['mean_conns']:.3f}, max {c['max_conns']}"
            )
    if args.only in (None, "kresd"):
        for n in [int(x) for x in args.kresd_entries.split(",") if x]:
            k = bench_kresd_reload(tmp / f"kresd-{n}", n)
            print(f"\n## Knot Resolver 5.6 re-reading a {n:,}-entry export (policy.rpz, watched)")
            print(
                f"   export {k['export_s']:.1f} s; kresd start with the file {k['start_s']:.1f} s; "
                f"RSS {k['rss_mb']:.0f} MB (after reload {k['rss_after_mb']:.0f} MB)"
            )
            print(
                f"   cached answer: {k['baseline_ms']:.1f} ms before; longest during the reload "
                f"{k['stall_s']:.2f} s; new entry enforced {k['enforced_s']:.1f} s after the "
                f"rename (write took {k['write_s']:.1f} s)"
            )
    if args.only in ("kresd", "pdns"):
        return
    if args.updates:
        prop = asyncio.run(
            bench_propagation(
                tmp / "prop", args.updates, args.poll, args.pdns_refresh, args.pdns_packetcache
            )
        )
        print(f"\n## publish -> change visible ({args.updates} updates, 1 added + 1 delisted each)")
        print(f"   (follower long-poll, rpz.list_poll_interval = {args.poll} s, BIND with TSIG)")
        print(
            f"   (PowerDNS: TSIG, refresh = {args.pdns_refresh} s, packetcache-ttl = "
            f"{args.pdns_packetcache} s, caches warmed with the new name before each publish;"
        )
        print("    kresd: `rpz export --follow --for kresd`, policy.rpz watching the file)")
        for who in ("server", "unbound", "bind", "pdns", "kresd"):
            t = prop["times"][who]
            label = "rpz server SOA" if who == "server" else who
            print(
                f"   {label:15} p50 {statistics.median(t) * 1000:7.0f} ms   "
                f"p99 {pct(t, 99) * 1000:7.0f} ms   max {max(t) * 1000:7.0f} ms"
            )
        if prop["ixfrs"]:
            per = prop["ixfr_bytes"] / prop["ixfrs"]
            print(
                f"   IXFRs served {prop['ixfrs']:.0f} (full fallbacks {prop['full']:.0f}), "
                f"{per:.0f} bytes each on average = {per / 2:.0f} bytes per changed entry "
                "(framing, 4 SOAs and, for BIND, TSIG included)"
            )

    if args.only:
        return
    sizes = asyncio.run(bench_ixfr_sizes(tmp / "ixfr"))
    print("\n## IXFR size by diff size (TSIG-signed, CNAME action, dnspython client)")
    for changes, size, n in sizes:
        print(f"   {changes:5} changed entries: {size:8} bytes   {size / n:7.1f} bytes/entry")

    if not args.skip_large:
        big = bench_big_axfr(tmp / "big", args.entries, args.message_size)
        n = big["entries"]
        print(
            f"\n## AXFR of {n:,} entries ({2 * n:,} policy records), "
            f"message size {args.message_size}"
        )
        print(f"   building and saving the signed list        {big['make_list_s']:7.1f} s")
        print(f"   server start to zone ready (load+verify)    {big['server_load_s']:7.1f} s")
        print(f"   server peak RSS                             {big['server_rss_mb']:7.0f} MB")
        for label in ("tsig", "unsigned"):
            secs, msgs, rrs, size = big[f"axfr_{label}"]
            print(
                f"   cordon AXFR ({label:8}) {secs:7.2f} s  {msgs:6} msgs  {rrs:9,} RRs  "
                f"{size / 1e6:7.1f} MB  {rrs / secs:10,.0f} RR/s"
            )
        bsecs, bmsgs, brrs, bsize, bload = big["bind"]
        print(
            f"   BIND 9.18 AXFR (tsig)   {bsecs:7.2f} s  {bmsgs:6} msgs  {brrs:9,} RRs  "
            f"{bsize / 1e6:7.1f} MB  {brrs / bsecs:10,.0f} RR/s   (zone load {bload:.1f} s)"
        )
        secs, _, _, _ = big["axfr_tsig"]
        print(f"   ratio cordon/BIND (tsig AXFR time)          {secs / bsecs:7.2f}")
        psecs, count = big["parsed"]
        print(
            f"   dnspython dns.query.xfr parsing every RR: {count:,} RRs in {psecs:.1f} s "
            f"({count / psecs:,.0f} RR/s) -> {2 * n / (count / psecs):.0f} s for the whole zone"
        )
        print(
            f"   export to zone file                         {big['export_s']:7.1f} s  "
            f"({big['export_mb']:.0f} MB)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n# bench process peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
