"""The running service: list hot swap under load, metrics and /healthz, worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import dns.message
import dns.rcode
import pytest
from resolver_fixtures import (
    ROOT_PUB,
    STOP_V4,
    FakeUpstream,
    ThreadedServer,
    addresses,
    ask,
    list_state,
    make_config,
    query,
    running,
    udp_exchange,
    write_list,
    write_state,
)

REPO = Path(__file__).resolve().parent.parent
LISTED = ["blocked.example"]


# ---------------------------------------------------------------------------------------------
# List hot swap


def test_list_swap_under_load_loses_no_query(tmp_path):
    """A client keeps querying while a new 100k-entry list replaces the old one."""
    filler = [f"site{i}.example" for i in range(100_000)]
    old = list_state(["keep.example", *filler])
    new = list_state(["keep.example", "new.example", *filler])
    write_state(tmp_path, old, serial=1)

    def config(upstream_port: int):
        return make_config(tmp_path, [upstream_port])

    with ThreadedServer(config) as server:
        port = server.port
        probes = [
            (query("www.keep.example").to_wire(), "keep"),
            (query("new.example").to_wire(), "new"),
            (query("allowed.example").to_wire(), "allowed"),
        ]
        traffic = threading.Event()  # set once queries are flowing: the swap happens under load
        writer = threading.Thread(
            target=lambda: (traffic.wait(20), write_state(tmp_path, new, 2)), daemon=True
        )
        failures = 0
        new_blocked_seen = False
        latencies = []
        sent = 0
        writer.start()
        deadline = time.monotonic() + 20
        swapped_at = None
        while time.monotonic() < deadline:
            for wire, kind in probes:
                started = time.perf_counter()
                raw = udp_exchange(port, wire, timeout=1.0)
                latencies.append(time.perf_counter() - started)
                sent += 1
                if sent == 300:
                    traffic.set()
                if raw is None:
                    failures += 1
                    continue
                msg = dns.message.from_wire(raw)
                if kind == "keep":
                    assert addresses(msg) == [STOP_V4]
                elif kind == "allowed":
                    assert msg.rcode() == dns.rcode.NXDOMAIN
                else:
                    blocked = addresses(msg) == [STOP_V4]
                    assert blocked or not new_blocked_seen  # never back to the old list
                    if blocked and not new_blocked_seen:
                        new_blocked_seen = True
                        swapped_at = sent
            if swapped_at is not None and sent >= max(3000, swapped_at + 1500):
                break
        writer.join()
        snap = server.call(server.service.stats.snapshot)
    assert failures == 0
    assert new_blocked_seen and sent >= 3000
    assert snap["list"]["serial"] == 2 and snap["list"]["swaps"] == 2
    assert snap["internal_errors"] == 0
    swap_ms = snap["list"]["last_swap_seconds"] * 1000
    print(
        f"\nswap of {len(new)} entries: build+swap {swap_ms:.0f} ms off the loop; "
        f"{sent} queries, worst latency {max(latencies) * 1000:.1f} ms"
    )


# ---------------------------------------------------------------------------------------------
# Metrics and health


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def test_metrics_and_healthz(tmp_path):
    up = await FakeUpstream().start()
    up.add("allowed.example", "A", "198.51.100.7")
    state = list_state(LISTED)
    write_state(tmp_path, state, serial=5)
    entry_id = next(iter(state)).entry_id
    (tmp_path / "status.json").write_text(
        json.dumps(
            {
                "held": {"serial": 6, "message": "growth"},
                "alarms": {"stale": "x"},
                "updated": int(time.time()),
            }
        )
    )
    try:
        async with running(make_config(tmp_path, [up.port])) as service:
            for _ in range(3):
                await ask(service.port, "www.blocked.example")
            await ask(service.port, "allowed.example")
            await ask(service.port, "allowed.example")
            status, text = await get(service.metrics_port, "/metrics")
            assert status == 200
            lines = set(text.splitlines())
            assert 'cordon_resolver_queries_total{outcome="blocked"} 3.0' in lines
            assert 'cordon_resolver_queries_total{outcome="forwarded"} 1.0' in lines
            assert 'cordon_resolver_queries_total{outcome="cached"} 1.0' in lines
            assert f'cordon_resolver_blocked_by_entry_total{{entry="{entry_id}"}} 3.0' in lines
            assert "cordon_resolver_cache_hits_total 1.0" in lines
            assert "cordon_resolver_cache_entries 1.0" in lines
            assert "cordon_resolver_list_serial 5.0" in lines
            assert "cordon_resolver_list_entries 1.0" in lines
            assert any(line.startswith("cordon_resolver_list_age_seconds ") for line in lines)
            name = f"127.0.0.1:{up.port}"
            assert f'cordon_resolver_upstream_queries_total{{upstream="{name}"}} 1.0' in lines
            assert (
                f'cordon_resolver_upstream_latency_seconds_count{{upstream="{name}"}} 1.0' in lines
            )
            assert f'cordon_resolver_upstream_up{{upstream="{name}"}} 1.0' in lines
            assert "cordon_resolver_sync_held 1.0" in lines
            assert 'cordon_resolver_sync_alarm{alarm="stale"} 1.0' in lines
            assert 'cordon_resolver_sync_alarm{alarm="frozen"} 0.0' in lines
            assert "cordon_resolver_internal_errors_total 0.0" in lines
            status, body = await get(service.metrics_port, "/healthz")
            assert status == 200
            health = json.loads(body)
            assert health["status"] == "ok" and health["serial"] == 5
            assert health["age_seconds"] >= 0 and health["entries"] == 1
    finally:
        await up.stop()


async def test_blocked_by_entry_labels_are_bounded(tmp_path):
    up = await FakeUpstream().start()
    write_list(tmp_path, ["a.example", "b.example", "c.example"])
    try:
        config = make_config(tmp_path, [up.port], metrics={"max_entry_labels": 2})
        async with running(config) as service:
            for name in ("a.example", "b.example", "c.example", "c.example"):
                await ask(service.port, name)
            _, text = await get(service.metrics_port, "/metrics")
            entry_lines = [
                line
                for line in text.splitlines()
                if line.startswith("cordon_resolver_blocked_by_entry_total{")
            ]
            assert len(entry_lines) == 3
            assert 'cordon_resolver_blocked_by_entry_total{entry="other"} 2.0' in entry_lines
    finally:
        await up.stop()


async def test_without_a_list_forwards_and_health_says_so(tmp_path):
    up = await FakeUpstream().start()
    up.add("blocked.example", "A", "198.51.100.66")
    try:
        async with running(make_config(tmp_path, [up.port])) as service:
            resp = await ask(service.port, "blocked.example")
            assert addresses(resp) == ["198.51.100.66"]
            status, body = await get(service.metrics_port, "/healthz")
            assert status == 503 and json.loads(body)["status"] == "no_list"
            _, text = await get(service.metrics_port, "/metrics")
            assert "cordon_resolver_list_loaded 0.0" in text.splitlines()
            write_list(tmp_path, LISTED, serial=3)
            await asyncio.wait_for(service.swapped.wait(), 5)
            assert addresses(await ask(service.port, "blocked.example")) == [STOP_V4]
            status, _ = await get(service.metrics_port, "/healthz")
            assert status == 200
        config = make_config(tmp_path / "empty", [up.port], server={"without_list": "servfail"})
        async with running(config) as service:
            resp = await ask(service.port, "allowed.example")
            assert resp.rcode() == dns.rcode.SERVFAIL
    finally:
        await up.stop()


async def test_damaged_state_file_keeps_the_list_in_force(tmp_path):
    up = await FakeUpstream().start()
    write_list(tmp_path, LISTED, serial=1)
    try:
        async with running(make_config(tmp_path, [up.port])) as service:
            data = (tmp_path / "state.bin").read_bytes()
            tmp = tmp_path / "state.tmp"
            tmp.write_bytes(data[:-10] + b"\x00" * 10)
            os.replace(tmp, tmp_path / "state.bin")
            # The watcher looked at the damaged file and refused it; then the list still holds.
            for _ in range(400):
                if service.watcher.refused == 1:
                    break
                await asyncio.sleep(0.025)
            assert service.watcher.refused == 1
            assert addresses(await ask(service.port, "blocked.example")) == [STOP_V4]
            assert service.stats.list_serial == 1
    finally:
        await up.stop()


# ---------------------------------------------------------------------------------------------
# Worker processes (the real command, as a subprocess)


def free_dns_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def running_pid(pid: int) -> bool:
    """True while any thread of `pid` is not a zombie: the main thread of a killed process can
    be a zombie while another thread still holds (and has not yet closed) its sockets."""
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                if "zombie" not in (task / "status").read_text():
                    return True
            except OSError:
                continue  # that thread is gone
    except OSError:
        pass
    return False


def http_json(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
async def test_two_workers_share_the_port_and_survive_sigkill(tmp_path):
    up = await FakeUpstream().start()
    up.add("allowed.example", "A", "198.51.100.7")
    write_list(tmp_path, LISTED, serial=4)
    port, metrics_port = free_dns_port(), free_dns_port()
    (tmp_path / "resolver.toml").write_text(
        f"""
[sync]
root_keys = ["{ROOT_PUB}"]
state_dir = "{tmp_path}"

[server]
listen = ["127.0.0.1"]

[blocking]
ipv4 = "{STOP_V4}"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORDON_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resolver.cli",
            "serve",
            "--config",
            str(tmp_path / "resolver.toml"),
            "--workers",
            "2",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--upstream",
            f"127.0.0.1:{up.port}",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status, health = 0, {}
        while time.monotonic() < deadline:
            status, health = await asyncio.to_thread(http_json, metrics_port, "/healthz")
            if status == 200:
                break
            assert proc.poll() is None, proc.stderr.read()
            await asyncio.sleep(0.2)
        assert status == 200 and health["workers"] == 2 and health["serial"] == 4
        # Many source ports: the kernel spreads them over both workers.
        for i in range(60):
            name = "blocked.example" if i % 2 else "allowed.example"
            resp = await ask(port, name)
            assert addresses(resp) == ([STOP_V4] if i % 2 else ["198.51.100.7"])
        _, health = await asyncio.to_thread(http_json, metrics_port, "/healthz")
        counts = [w["requests"] for w in health["per_worker"]]
        assert sum(counts) == 60 and all(c > 0 for c in counts), counts

        # SIGKILL one worker: the other keeps answering; the supervisor starts a new one.
        workers = children(proc.pid)
        victim = next(w for w in health["per_worker"])["pid"]
        assert victim in workers
        os.kill(victim, signal.SIGKILL)
        # Datagrams already queued on the dead worker's socket are lost (clients retry, as
        # for any lost datagram); once it is gone, the other worker gets them all.
        while running_pid(victim):
            await asyncio.sleep(0.01)
        for _ in range(20):
            assert addresses(await ask(port, "blocked.example")) == [STOP_V4]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, health = await asyncio.to_thread(http_json, metrics_port, "/healthz")
            pids = [w["pid"] for w in health.get("per_worker", [])]
            if status == 200 and len(pids) == 2 and victim not in pids:
                break
            await asyncio.sleep(0.2)
        assert status == 200 and victim not in pids and health["workers"] == 2

        # A new list reaches every worker.
        write_list(tmp_path, [*LISTED, "allowed.example"], serial=5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, health = await asyncio.to_thread(http_json, metrics_port, "/healthz")
            if health.get("serial") == 5:
                break
            await asyncio.sleep(0.2)
        assert health["serial"] == 5
        for _ in range(10):
            assert addresses(await ask(port, "allowed.example")) == [STOP_V4]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        deadline = time.monotonic() + 20
        while any(running_pid(pid) for pid in pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not any(running_pid(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await up.stop()


def test_serve_refuses_a_config_without_upstreams(tmp_path):
    (tmp_path / "resolver.toml").write_text(f'[sync]\nroot_keys = ["{ROOT_PUB}"]\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "resolver.cli",
            "serve",
            "--config",
            str(tmp_path / "resolver.toml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "upstream.servers" in out.stderr
