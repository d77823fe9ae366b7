#!/usr/bin/env python3
"""Authority responsiveness during a large batch import: long-polls and acks while 1M lines
are imported.

Usage: python bench/authority_import_longpoll.py [--lines 1000000] [--clients 20]
                                                 [--peer-src DIR]

Runs a real authority (`python -m blocklist.cli init` + `serve`) on 127.0.0.1 in a temporary
directory, with an ASP token and the import body prepared beforehand (N placeholder names,
JSON). Then, in two phases of the same run — idle (no import) and during one
`POST /v1/batches` of N lines — a set of clients measures:

  - long-poll overshoot: `GET /v1/list/hashed/notification?after=<serial>&wait=1` answers
    after the 1 s wait; how much later than that it comes back;
  - immediate GET: the same endpoint without `after` (answers at once);
  - ack: `POST /v1/acks` (a write).

and prints p50/p99/max for each phase, and the during/idle ratio. With --peer-src DIR (a
source tree of another version, e.g. `git archive main | tar -x -C DIR`), the same
measurement runs against that version first, so both are measured in the same run on the
same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from authority_longpoll import free_port, pct  # noqa: E402


def import_body(lines: int) -> bytes:
    entries = [
        {"value": f"imported-{i:07d}.example", "hosting_country": "NL", "evidence": "bench-1"}
        for i in range(lines)
    ]
    return json.dumps({"source": "bench", "lines": entries}).encode()


class Server:
    def __init__(self, directory: Path, src: Path) -> None:
        self.dir = directory
        self.src = src
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "authority.toml"
        self.config.write_text(
            '[authority]\nname = "Bench"\nlist_id = "bench"\nstate_dir = "state"\n'
            f'\n[api]\nhost = "127.0.0.1"\nport = {self.port}\n'
            "max_import_bytes = 1073741824\nlong_poll_max_seconds = 60\n"
            "\n[rails]\nprotected_names = []\n"
            "\n[lifecycle]\nscheduler_minutes = 0\n",
            encoding="utf-8",
        )
        self.env = {**os.environ, "PYTHONPATH": str(src)}
        self.proc: subprocess.Popen | None = None
        self.admin = ""

    def cli(self, *args: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "blocklist.cli", "--json", *args],
            cwd=self.dir,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.admin = self.cli("init", "--config", str(self.config), "--admin", "admin")["token"]
        log = open(self.dir / "serve.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blocklist.cli", "serve", "--config", str(self.config)],
            cwd=self.dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the authority exited; see {self.dir / 'serve.log'}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError("the authority did not start within 30 s")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Probes:
    """Clients that keep long-polling, fetching and acking; samples go to the current phase."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.phase = "idle"
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.errors = 0
        self.stop = asyncio.Event()

    def add(self, kind: str, value: float) -> None:
        self.samples.setdefault(self.phase, {}).setdefault(kind, []).append(value)

    async def long_poll(self) -> None:
        while not self.stop.is_set():
            phase = self.phase
            t0 = time.perf_counter()
            async with self.session.get(
                f"{self.url}/v1/list/hashed/notification?after=0&wait=1", headers=self.headers
            ) as resp:
                await resp.read()
            if self.phase == phase:
                self.add("long-poll overshoot", time.perf_counter() - t0 - 1.0)

    async def immediate(self) -> None:
        while not self.stop.is_set():
            phase = self.phase
            t0 = time.perf_counter()
            async with self.session.get(
                f"{self.url}/v1/list/hashed/notification", headers=self.headers
            ) as resp:
                await resp.read()
            if self.phase == phase:
                self.add("immediate GET", time.perf_counter() - t0)
            await asyncio.sleep(0.02)

    async def ack(self, n: int) -> None:
        body = {"instance": f"dns-{n}", "serial": 0, "checksum": "0" * 64, "status": {}}
        while not self.stop.is_set():
            phase = self.phase
            t0 = time.perf_counter()
            async with self.session.post(
                f"{self.url}/v1/acks", json=body, headers=self.headers
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    self.errors += 1
            if self.phase == phase:
                self.add("ack", time.perf_counter() - t0)
            await asyncio.sleep(0.05)


async def measure(label: str, src: Path, body: bytes, clients: int, idle: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="cordon-bench-") as tmp:
        server = Server(Path(tmp), src)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await server.start(session)
            try:
                admin = {"Authorization": f"Bearer {server.admin}"}
                async with session.post(
                    f"{server.url}/v1/asps", json={"name": "isp"}, headers=admin
                ) as resp:
                    asp_token = (await resp.json())["token"]
                probes = Probes(session, server.url, asp_token)
                tasks = [asyncio.create_task(probes.long_poll()) for _ in range(clients)]
                tasks += [asyncio.create_task(probes.immediate()) for _ in range(clients // 4 or 1)]
                tasks += [asyncio.create_task(probes.ack(n)) for n in range(clients // 4 or 1)]
                await asyncio.sleep(idle)
                probes.phase = "import"
                t0 = time.perf_counter()
                async with session.post(
                    f"{server.url}/v1/batches",
                    data=body,
                    headers={**admin, "Content-Type": "application/json"},
                ) as resp:
                    report = await resp.json()
                    status = resp.status
                duration = time.perf_counter() - t0
                probes.phase = "after"
                probes.stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                server.stop()
    if status not in (200, 201):
        raise RuntimeError(f"{label}: the import failed with {status}: {report}")
    return {
        "label": label,
        "import_seconds": duration,
        "accepted": report.get("accepted"),
        "samples": probes.samples,
        "ack_errors": probes.errors,
    }


def show(result: dict) -> None:
    print(
        f"\n{result['label']}: import of {result['accepted']} lines took "
        f"{result['import_seconds']:.1f} s (ack errors: {result['ack_errors']})"
    )
    print(f"  {'metric':22} {'phase':7} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for kind in ("long-poll overshoot", "immediate GET", "ack"):
        for phase in ("idle", "import"):
            values = result["samples"].get(phase, {}).get(kind, [])
            if not values:
                print(f"  {kind:22} {phase:7} {0:>6}")
                continue
            print(
                f"  {kind:22} {phase:7} {len(values):>6} {pct(values, 50) * 1000:>9.1f} "
                f"{pct(values, 99) * 1000:>9.1f} {max(values) * 1000:>9.1f}"
            )


def p99(result: dict, phase: str, kind: str) -> float:
    values = result["samples"].get(phase, {}).get(kind, [])
    return pct(values, 99) if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20, help="long-polling clients")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds measured before")
    parser.add_argument("--peer-src", type=Path, help="source tree of the version to compare")
    args = parser.parse_args()
    print(f"preparing an import body of {args.lines} lines…", flush=True)
    body = import_body(args.lines)
    print(f"  {len(body) / 1e6:.0f} MB of JSON; machine: {os.cpu_count()} cores, shared")
    results = []
    if args.peer_src:
        results.append(await measure("peer", args.peer_src, body, args.clients, args.idle))
        show(results[-1])
    results.append(await measure("this tree", ROOT, body, args.clients, args.idle))
    show(results[-1])
    ours = results[-1]
    for kind in ("long-poll overshoot", "immediate GET", "ack"):
        idle, during = p99(ours, "idle", kind), p99(ours, "import", kind)
        line = f"\n{kind}: p99 during the import / idle = {during / max(idle, 1e-6):.1f}x"
        if args.peer_src:
            peer = p99(results[0], "import", kind)
            line += f"; peer p99 during its import / ours = {peer / max(during, 1e-6):.1f}x"
        print(line, end="")
    print()


if __name__ == "__main__":
    asyncio.run(main())
