#!/usr/bin/env python3
"""Authority long-poll fan-out: how fast a publication reaches N waiting ASP clients.

Usage: python bench/authority_longpoll.py [--clients 200] [--rounds 5] [--seed 10000]

Runs a real authority (`python -m blocklist.cli init` + `serve`) as a subprocess on 127.0.0.1
in a temporary directory, creates one ASP (and token) per client, and seeds the list with
--seed placeholder names in one batch. Each round: every client sends
`GET /v1/list/hashed/notification?after=<serial>&wait=30` with its own token and waits; once
they have all been waiting --settle seconds, an officer adds and approves one entry and sends
`POST /v1/publish`. For each client we record when the new notification arrived, relative to
the moment the publish request was sent and to the moment its response came back (a client
may be answered before the publisher reads its own response: the server wakes the waiters
before it writes the publish response, so that figure can be negative).

Clients share one aiohttp connector without a connection limit (one TCP connection each)
and run on one event loop in this process (uvloop when installed), so client-side processing
of 200 responses is part of the figures. Every received notification is verified afterwards
(outside the timing) against the pinned root and must carry the new serial.

While each publish runs, a probe sends GET /healthz every 5 ms; its worst latency ("stall")
shows how long the server's event loop could not answer anything. After the rounds:
  - ack burst: every client posts an ack at once over its warm keep-alive connection, as ASPs
    do right after applying a serial;
  - connect burst: every client opens a new connection at once and fetches the notification,
    as after an authority restart.

The helpers here (AuthorityServer, pct) are also used by bench/sync_propagation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.notification import open_notification  # noqa: E402
from signing import parse_public_key  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


class AuthorityServer:
    """`blocklist init` + `blocklist serve` in a directory, plus the officers' calls a bench needs.

    Officers: `alice` (officer: adds, imports, publishes) and `bob` (approver: approves, accepts
    batches) — the four-eyes rule needs two people. Use as an async context manager.
    """

    def __init__(self, directory: Path, *, long_poll_max: int = 60) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "authority.toml"
        self.config.write_text(
            "[authority]\n"
            'name = "Bench Authority (placeholder)"\n'
            'list_id = "national"\n'
            'state_dir = "state"\n'
            "[api]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"long_poll_max_seconds = {long_poll_max}\n"
            "[rails]\n"
            'protected_names = ["www.protected.example"]\n'
        )
        self.proc: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}
        self.root_key = ""
        self.session: aiohttp.ClientSession | None = None
        self.serial = 0
        self._n = 0

    @property
    def root(self) -> bytes:
        return parse_public_key(self.root_key)

    async def __aenter__(self) -> AuthorityServer:
        cli = [sys.executable, "-m", "blocklist.cli"]
        out = subprocess.run(
            [*cli, "init", "--config", str(self.config), "--admin", "admin", "--json"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(out.stdout)
        self.root_key = info["root_public_key"]
        self.tokens["admin"] = info["token"]
        log = open(self.dir / "serve.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [*cli, "serve", "--config", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the authority exited; see {self.dir / 'serve.log'}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"{self.url}/healthz") as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("the authority did not start within 30 s")
            await asyncio.sleep(0.1)
        self.tokens["alice"] = (
            await self.call("admin", "POST", "/v1/officers", {"name": "alice", "role": "officer"})
        )["token"]
        # An approver the admin creates waits for a second person; create it on the state
        # directory instead, as an operator would for the first approver.
        bob = subprocess.run(
            [
                *cli,
                "--json",
                "officer",
                "add",
                "bob",
                "--role",
                "approver",
                "--config",
                self.config,
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        self.tokens["bob"] = json.loads(bob.stdout)["token"]
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                # A server with long-polls still pending (even of clients that went away) waits
                # for them before it exits; a bench does not need a graceful stop.
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def call(self, who: str, method: str, path: str, body: object | None = None) -> dict:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            data = await resp.json()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {data}")
            return data

    async def add_asps(self, n: int, prefix: str = "isp") -> list[str]:
        """n ASPs, one token each."""
        tokens = []
        for i in range(n):
            data = await self.call("admin", "POST", "/v1/asps", {"name": f"{prefix}-{i:04d}"})
            tokens.append(data["token"])
        return tokens

    async def seed(self, n: int) -> dict:
        """Import n placeholder names as one batch, accept it, publish: serial 1."""
        if n > 0:
            lines = [
                {
                    "value": f"seed-{i}.blocked{i % 97}.example",
                    "kind": "domain",
                    "hosting_country": "NL",
                    "evidence": "BENCH-SEED",
                }
                for i in range(n)
            ]
            report = await self.call(
                "alice", "POST", "/v1/batches", {"source": "bench seed", "lines": lines}
            )
            await self.call(
                "bob", "POST", f"/v1/batches/{report['batch_id']}/accept", {"confirm_large": True}
            )
        else:
            await self.add_approved()
        return await self.publish()

    async def add_approved(self, count: int = 1) -> None:
        for _ in range(count):
            self._n += 1
            entry = await self.call(
                "alice",
                "POST",
                "/v1/entries",
                {
                    "value": f"change-{self._n}.blocked.example",
                    "hosting_country": "NL",
                    "evidence": f"BENCH-{self._n}",
                },
            )
            await self.call("bob", "POST", f"/v1/entries/{entry['id']}/approve")

    async def publish(self) -> dict:
        result = await self.call("alice", "POST", "/v1/publish")
        self.serial = result["serial"]
        return result

    async def timed_publish(self) -> tuple[float, float, dict]:
        """(monotonic time the request was sent, time its response was read, result)."""
        t0 = time.monotonic()
        result = await self.publish()
        return t0, time.monotonic(), result


# ---------------------------------------------------------------- the fan-out bench


async def wait_one(
    session: aiohttp.ClientSession, url: str, token: str
) -> tuple[float, int, bytes]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        data = await resp.read()
        return time.monotonic(), resp.status, data


class Probe:
    """GET /healthz every few ms: its worst latency shows how long the server's loop stalled."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.latencies: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            async with self.session.get(self.url) as resp:
                await resp.read()
            self.latencies.append((time.monotonic() - t) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> float:
        self._stop.set()
        assert self._task is not None
        await self._task
        return max(self.latencies)


async def ack_burst(
    session: aiohttp.ClientSession, url: str, tokens: list[str], serial: int, checksum: str
) -> None:
    """Every client acks at once, as ASPs do right after applying a serial (over the
    keep-alive connections their long-polls used)."""

    async def ack(i: int, token: str) -> float:
        t = time.monotonic()
        body = {"instance": f"resolver-{i:04d}", "serial": serial, "checksum": checksum}
        async with session.post(
            f"{url}/v1/acks", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"ack answered {resp.status}: {await resp.text()}")
        return (time.monotonic() - t) * 1000

    await burst("ack burst", session, url, [ack(i, tok) for i, tok in enumerate(tokens)])


async def connect_burst(url: str, tokens: list[str]) -> None:
    """Every client opens a new connection at once and fetches the notification, as after an
    authority restart or a network cut. Beyond the server's listen backlog a connection
    attempt waits for the kernel's SYN retransmission (1 s)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as fresh:

        async def get(token: str) -> float:
            t = time.monotonic()
            async with fresh.get(
                f"{url}/v1/list/hashed/notification", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"notification answered {resp.status}")
            return (time.monotonic() - t) * 1000

        async with aiohttp.ClientSession() as probe_session:
            await burst("connect burst", probe_session, url, [get(tok) for tok in tokens])


async def burst(name: str, probe_session: aiohttp.ClientSession, url: str, calls: list) -> None:
    probe = Probe(probe_session, f"{url}/healthz")
    probe.start()
    await asyncio.sleep(0.05)
    t = time.monotonic()
    took = await asyncio.gather(*calls)
    total = (time.monotonic() - t) * 1000
    stall = await probe.stop()
    print(
        f"{name}: {len(calls)} at once: all answered in {total:.0f} ms (each p50 "
        f"{statistics.median(took):.0f} ms, max {max(took):.0f} ms, over 1 s: "
        f"{sum(x > 1000 for x in took)}); /healthz worst {stall:.0f} ms meanwhile"
    )


async def run(args: argparse.Namespace, directory: Path) -> None:
    async with AuthorityServer(directory) as auth:
        t = time.monotonic()
        first = await auth.seed(args.seed)
        print(
            f"authority on {auth.url}: seeded {first['entries']:,} entries "
            f"(serial {first['serial']}) in {time.monotonic() - t:.1f}s"
        )
        tokens = await auth.add_asps(args.clients)
        note_url = f"{auth.url}/v1/list/hashed/notification"
        connector = aiohttp.TCPConnector(limit=0)
        from_done: list[float] = []
        from_sent: list[float] = []
        print(
            f"{args.clients} long-polling ASP clients (wait=30), {args.rounds} publishes of "
            "one new entry each"
        )
        print("delay until each client has the new notification, from the publish request's")
        print("response (A) and from the moment it was sent (B); ms")
        print("'stall' = worst /healthz latency while publishing (a probe every 5 ms)")
        print(
            f"{'round':>5} {'serial':>6} {'publish':>8} {'stall':>7} | {'A p50':>7} "
            f"{'A p99':>7} {'A max':>7} | {'B p50':>7} {'B p99':>7} {'B max':>7} | B < 1 s"
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            for rnd in range(1, args.rounds + 1):
                after = auth.serial
                url = f"{note_url}?after={after}&wait=30"
                tasks = [asyncio.create_task(wait_one(session, url, tok)) for tok in tokens]
                await asyncio.sleep(args.settle)
                early = sum(t.done() for t in tasks)
                if early:
                    raise RuntimeError(f"{early} clients were answered before the publish")
                await auth.add_approved()
                probe = Probe(session, f"{auth.url}/healthz")
                probe.start()
                await asyncio.sleep(0.05)
                t_sent, t_done, result = await auth.timed_publish()
                got = await asyncio.wait_for(asyncio.gather(*tasks), 35)
                stall = await probe.stop()
                serial = result["serial"]
                for _, status, data in got:
                    note = open_notification(data, [auth.root], int(time.time()))
                    if status != 200 or note.serial != serial:
                        raise RuntimeError(f"client got status {status}, serial {note.serial}")
                d_done = [(t - t_done) * 1000 for t, _, _ in got]
                d_sent = [(t - t_sent) * 1000 for t, _, _ in got]
                from_done += d_done
                from_sent += d_sent
                within = sum(d < 1000 for d in d_sent)
                print(
                    f"{rnd:>5} {serial:>6} {(t_done - t_sent) * 1000:6.1f}ms {stall:5.0f}ms | "
                    f"{statistics.median(d_done):7.1f} {pct(d_done, 99):7.1f} "
                    f"{max(d_done):7.1f} | {statistics.median(d_sent):7.1f} "
                    f"{pct(d_sent, 99):7.1f} {max(d_sent):7.1f} | {within:>3}/{len(got)}"
                )
            total = len(from_sent)
            within = sum(d < 1000 for d in from_sent)
            print(
                f"all {total} client×publish pairs: from request sent p50 "
                f"{statistics.median(from_sent):.1f} ms, p99 {pct(from_sent, 99):.1f} ms, max "
                f"{max(from_sent):.1f} ms; from publish response p50 "
                f"{statistics.median(from_done):.1f} ms, p99 {pct(from_done, 99):.1f} ms, max "
                f"{max(from_done):.1f} ms; answered within 1 s of the request: {within}/{total}"
            )
            await ack_burst(session, auth.url, tokens, result["serial"], result["checksum"])
        await connect_burst(auth.url, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="long-polling clients")
    parser.add_argument("--rounds", type=int, default=5, help="publishes to measure")
    parser.add_argument("--seed", type=int, default=10_000, help="entries in the list")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds the clients wait before each publish"
    )
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="cordon-bench-") as tmp:
            asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
