#!/usr/bin/env python3
"""Sync propagation: from a publish to every ASP sync client having the new list on disk and acked.

Usage: python bench/sync_propagation.py [--followers 50] [--procs 2] [--publishes 10]
                                        [--spacing 1.0] [--seed 10000]

Runs a real authority (`blocklist init` + `serve`, see bench/authority_longpoll.py) as a
subprocess on 127.0.0.1, seeds it with --seed placeholder names (serial 1), creates one ASP per
follower, then starts --procs client processes (this script with --worker), each running
followers/procs `blocklist.sync.follower.Follower` instances on one event loop with the
follower's own `run()` loop (long-poll 30 s), each with its own state directory and token.

Why 2 processes × 25 followers: the machine has 2 cores and the authority is a third process;
one client process would put all 50 followers' verify/apply/persist on one core and measure
the bench's own event loop more than the protocol. A real ASP runs one follower per host.

Once every follower has applied and acked serial 1, the authority publishes --publishes changes
(one new entry each) --spacing seconds apart. For each follower and serial the workers report,
on stdout, the monotonic time (shared by all processes on Linux) when
  - persisted: the follower handed the new list to its consumers, which it does only after
    `verified.save` wrote, fsynced and renamed state.bin (and swapped it in);
  - acked: the follower's POST /v1/acks for that serial (or a later one) returned 200.
Delays are measured from the moment the publish request was sent. At the end the authority's
compliance report must show every instance at the last serial, not divergent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authority_longpoll import AuthorityServer, pct

from blocklist.config import validate_config
from blocklist.sync.config import SyncConfig
from blocklist.sync.follower import Follower

# ---------------------------------------------------------------- worker process


_buffered: list[dict] = []


def _emit(**fields) -> None:
    """Acks go to the controller at once (it waits for them); the rest at exit, to keep the
    bench's own pipe writes off the followers' event loop while they work."""
    if fields["ev"] in ("acked", "exit", "log"):
        if fields["ev"] == "exit":
            for f in _buffered:
                sys.stdout.write(json.dumps(f) + "\n")
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
    else:
        _buffered.append(fields)


def make_follower(spec: dict, index: int, token: str, state_dir: Path) -> Follower:
    config = validate_config(
        {
            "sync": {
                "authority_url": spec["url"],
                "token": token,
                "root_keys": [spec["root_key"]],
                "state_dir": str(state_dir),
                "list_id": "national",
                "instance": f"resolver-{index:03d}",
                "long_poll_seconds": 30,
                "request_timeout": 10,
                "max_backoff_seconds": 5,
            },
            "rails": {},
        },
        SyncConfig,
        "bench",
    )
    follower = Follower(config)

    async def persisted(verified) -> None:
        _emit(ev="persisted", f=index, serial=verified.serial, t=time.monotonic())

    follower.subscribe(persisted)
    send_ack = follower.source.ack

    async def ack(body: dict) -> None:
        await send_ack(body)
        _emit(ev="acked", f=index, serial=body["serial"], t=time.monotonic())

    follower.source.ack = ack  # type: ignore[method-assign]
    get_notification, fetch = follower.source.notification, follower.source.fetch

    async def notification(after, wait, start=0) -> bytes:
        data = await get_notification(after, wait, start)
        _emit(ev="notified", f=index, t=time.monotonic())
        return data

    async def fetched(uri: str, size: int) -> bytes:
        data = await fetch(uri, size)
        if uri.startswith("delta-"):  # delta-<session>-<from>-<to>.bin
            serial = int(uri.removesuffix(".bin").rsplit("-", 1)[1])
            _emit(ev="fetched", f=index, serial=serial, t=time.monotonic())
        return data

    follower.source.notification = notification  # type: ignore[method-assign]
    follower.source.fetch = fetched  # type: ignore[method-assign]
    return follower


class _Relay(logging.Handler):
    """Warnings and errors of the followers go to the controller, which reports them."""

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None) or {}
        _emit(
            ev="log",
            level=record.levelname,
            msg=record.getMessage(),
            t=time.monotonic(),
            **{k: str(v) for k, v in fields.items()},
        )


async def worker(spec_path: Path, first: int, count: int, max_seconds: float) -> None:
    logging.getLogger().addHandler(_Relay(logging.WARNING))
    spec = json.loads(spec_path.read_text())
    followers = [
        make_follower(spec, i, spec["tokens"][i], Path(spec["dir"]) / f"follower-{i:03d}")
        for i in range(first, first + count)
    ]
    tasks = [asyncio.create_task(f.run()) for f in followers]
    # Stop when the parent closes our stdin (or says "stop"), or after max_seconds anyway.
    stdin = asyncio.create_task(asyncio.to_thread(sys.stdin.readline))
    await asyncio.wait([stdin], timeout=max_seconds)
    logging.getLogger().setLevel(logging.CRITICAL)  # closing aborts the pending long-polls
    # stop() alone does not end a long-poll in flight (up to 30 s): close the sessions too.
    for f in followers:
        await f.close()
    await asyncio.wait(tasks, timeout=5)
    for t in tasks:
        t.cancel()
    _emit(ev="exit")
    # The stdin reader thread may still be blocked (the max_seconds path): do not wait for it.
    os._exit(0)


# ---------------------------------------------------------------- controller


class Events:
    def __init__(self) -> None:
        # (event, follower) -> list of (serial, time)
        self.seen: dict[tuple[str, int], list[tuple[int, float]]] = {}
        self.changed = asyncio.Event()
        self.logs: list[dict] = []

    def add(self, ev: dict) -> None:
        if ev["ev"] == "log":
            self.logs.append(ev)
        elif ev["ev"] == "notified":  # no serial: matched by time to the publish before it
            self.seen.setdefault(("notified", ev["f"]), []).append((0, ev["t"]))
        elif ev["ev"] in ("persisted", "acked", "fetched"):
            self.seen.setdefault((ev["ev"], ev["f"]), []).append((ev["serial"], ev["t"]))
            self.changed.set()

    def first(self, ev: str, follower: int, serial: int) -> float | None:
        """When `follower` first reached `serial` or later for event `ev`."""
        times = [t for s, t in self.seen.get((ev, follower), []) if s >= serial]
        return min(times) if times else None

    def after(self, ev: str, follower: int, t0: float) -> float | None:
        times = [t for _, t in self.seen.get((ev, follower), []) if t >= t0]
        return min(times) if times else None

    def all_at(self, n: int, serial: int) -> bool:
        return all(self.first("acked", f, serial) is not None for f in range(n))

    async def wait_all(self, n: int, serial: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.all_at(n, serial):
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True


async def read_events(proc: asyncio.subprocess.Process, events: Events) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        with contextlib.suppress(json.JSONDecodeError):
            events.add(json.loads(line))


async def run(args: argparse.Namespace, directory: Path) -> None:
    n = args.followers
    async with AuthorityServer(directory) as auth:
        t = time.monotonic()
        first = await auth.seed(args.seed)
        print(
            f"authority on {auth.url}: seeded {first['entries']:,} entries "
            f"(serial {first['serial']}) in {time.monotonic() - t:.1f}s"
        )
        tokens = await auth.add_asps(n)
        spec = directory / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "url": auth.url,
                    "root_key": auth.root_key,
                    "tokens": tokens,
                    "dir": str(directory),
                }
            )
        )
        events = Events()
        procs = []
        readers = []
        per = -(-n // args.procs)
        budget = args.publishes * args.spacing + 120
        for p in range(args.procs):
            lo, hi = p * per, min(n, (p + 1) * per)
            if lo >= hi:
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--worker",
                str(spec),
                "--first",
                str(lo),
                "--count",
                str(hi - lo),
                "--max-seconds",
                str(budget),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
            readers.append(asyncio.create_task(read_events(proc, events)))
        try:
            t = time.monotonic()
            if not await events.wait_all(n, auth.serial, 60):
                raise RuntimeError("followers did not all apply and ack the first serial")
            print(
                f"{n} followers in {len(procs)} processes took serial {auth.serial} "
                f"(snapshot) in {time.monotonic() - t:.1f}s; now {args.publishes} publishes "
                f"{args.spacing:g} s apart"
            )
            publishes: list[tuple[int, float, float]] = []
            for _ in range(args.publishes):
                start = time.monotonic()
                await auth.add_approved()
                t_sent, t_done, result = await auth.timed_publish()
                publishes.append((result["serial"], t_sent, t_done))
                await asyncio.sleep(max(0.0, start + args.spacing - time.monotonic()))
            complete = await events.wait_all(n, auth.serial, 30)
            report = await auth.call("admin", "GET", "/v1/compliance")
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    with contextlib.suppress(ConnectionError):
                        proc.stdin.write(b"stop\n")
                        await proc.stdin.drain()
                        proc.stdin.close()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            # The workers' buffered events arrive as they exit; the readers end at EOF.
            await asyncio.wait(readers, timeout=10)
            for r in readers:
                r.cancel()

    print(
        "delay from the publish request being sent until each follower had persisted / acked "
        "the new serial; ms"
    )
    print(
        f"{'serial':>6} {'publish':>8} | {'persist p50':>11} {'max':>7} | {'ack p50':>7} "
        f"{'max':>7} | all {n} done"
    )
    persisted_all: list[float] = []
    acked_all: list[float] = []
    missing = 0
    for serial, t_sent, t_done in publishes:
        p_delays, a_delays = [], []
        for f in range(n):
            tp, ta = events.first("persisted", f, serial), events.first("acked", f, serial)
            if tp is None or ta is None:
                missing += 1
                continue
            p_delays.append((tp - t_sent) * 1000)
            a_delays.append((ta - t_sent) * 1000)
        persisted_all += p_delays
        acked_all += a_delays
        if not p_delays:
            print(f"{serial:>6} nobody got it")
            continue
        done = max(max(p_delays), max(a_delays))
        print(
            f"{serial:>6} {(t_done - t_sent) * 1000:6.1f}ms | "
            f"{statistics.median(p_delays):11.1f} {max(p_delays):7.1f} | "
            f"{statistics.median(a_delays):7.1f} {max(a_delays):7.1f} | {done:7.1f}"
        )
    stages: dict[str, list[float]] = {"notified": [], "fetched": [], "persisted": [], "acked": []}
    for serial, t_sent, _ in publishes:
        for f in range(n):
            times = [
                events.after("notified", f, t_sent),
                events.first("fetched", f, serial),
                events.first("persisted", f, serial),
                events.first("acked", f, serial),
            ]
            if None not in times:
                for name, t in zip(stages, times, strict=True):
                    stages[name].append((t - t_sent) * 1000)  # type: ignore[operator]
    if stages["notified"]:
        print(
            "where the time goes, p50 / p99 ms: "
            + ", ".join(
                f"{k} {statistics.median(v):.0f} / {pct(v, 99):.0f}" for k, v in stages.items()
            )
            + " after the publish request was sent"
        )
        names = list(stages)
        steps = {
            f"{a}->{b}": [y - x for x, y in zip(stages[a], stages[b], strict=True)]
            for a, b in zip(["sent", *names], names, strict=False)
            if a != "sent"
        }
        print(
            "  per follower, each step: "
            + ", ".join(
                f"{k} {statistics.median(v):.0f} / {pct(v, 99):.0f}" for k, v in steps.items()
            )
        )
    both = [max(p, a) for p, a in zip(persisted_all, acked_all, strict=True)]
    print(
        f"over {len(both)} follower×publish pairs: persisted p50 "
        f"{statistics.median(persisted_all):.0f} ms, p99 {pct(persisted_all, 99):.0f} ms; "
        f"persisted+acked p50 {statistics.median(both):.0f} ms, p99 {pct(both, 99):.0f} ms, "
        f"max {max(both):.0f} ms; within 2 s: {sum(d < 2000 for d in both)}/{len(both)}"
        + (f"; {missing} pairs never completed" if missing or not complete else "")
    )
    t_first = publishes[0][1]
    logs = [e for e in events.logs if e["t"] >= t_first]
    if logs:
        print(
            f"{len(logs)} follower warnings/errors during the publishes, e.g.: "
            + "; ".join(f"{e['level']} {e['msg']} {e.get('detail', '')}" for e in logs[:3])
        )
    rows = report.get("instances", [])
    last = publishes[-1][0]
    ok = sum(1 for r in rows if r.get("serial") == last and not r.get("divergent"))
    print(
        f"authority compliance report: {ok}/{len(rows)} instances at serial {last}, not divergent"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--publishes", type=int, default=10)
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between publishes")
    parser.add_argument("--seed", type=int, default=10_000, help="entries in the list")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--worker", type=Path, metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=180, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    if args.worker:
        asyncio.run(worker(args.worker, args.first, args.count, args.max_seconds))
    elif args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="cordon-bench-") as tmp:
            asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
