#!/usr/bin/env python3
"""Resolver plugins: each resolver with the Cordon plugin, with the plain list as RPZ, with no list.

Usage: python bench/plugins.py [--entries 1000000] [--seconds 4] [--rounds 3] [--updates 20]
                               [--resolvers unbound,recursor,dnsdist]

For each resolver (Debian's Unbound 1.17 with the python module, PowerDNS Recursor 4.8 with the
Lua hooks, dnsdist 1.7 with the Lua FFI actions) and each mode, a daemon with one thread
forwards to an answer-everything Unbound on loopback, as in bench/resolver.sh. Modes: plugin
(the hashed index; caches flushed by `after_change` when a list arrives), horizon (the index;
cached answers re-checked every 3 s instead), rpz (the same names as an RPZ zone, where the
resolver has RPZ), none (no list). The modes of one resolver run side by side and take turns
within each of --rounds rounds (the figure is the median), so a busy moment on a shared
machine hits all of them alike. dnsperf (-c 4 -q 200) measures queries per second for the
workloads of bench/resolver.sh: cache hits over 100k names (warmed first), misses (unique
names), unique blocked names, and the 90/9/1 mix (hits/misses/blocked). Resident memory is
read after the list is loaded and compared with the same resolver without a list. Then, with
the plugin, --updates times: a cached name is added to the list, the index is rewritten as
`resolver sync` writes it (temp file, fsync, rename) and the clock runs until the resolver
answers the name as listed (index write included; the sync step before it is measured by
bench/sync_propagation.py and bench/sync_apply.py).
Only 127.0.0.1 is used. Output: a table on stdout and bench/out/plugins/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "tests"))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
from plugin_fixtures import (  # noqa: E402
    LUA_DIR,
    UNBOUND_PYTHONPATH,
    dns_port,
    dnsdist_config,
    lua_settings,
    plugin_settings,
    recursor_argv,
    unbound_config,
)

from blocklist.digests import DIGEST_SIZE, digest  # noqa: E402
from blocklist.files import write_atomic  # noqa: E402
from blocklist.state import ListState, bisect_digest  # noqa: E402
from blocklist.sync.index import INDEX_FILE, encode_index  # noqa: E402

STOP_V4 = "192.0.2.80"
CACHED = 100_000
OUT = ROOT_DIR / "bench" / "out" / "plugins"


def listed_name(i: int) -> str:
    return f"site{i}.blocked.example"


def build_state(n: int) -> ListState:
    digests = sorted(digest(listed_name(i)) for i in range(n))
    return ListState(b"".join(digests), bytes(8 * n), b"\x01" * n)


def with_name(state: ListState, name: str) -> ListState:
    d = digest(name)
    i = bisect_digest(state.digests, d)
    at = i * DIGEST_SIZE
    return ListState(
        state.digests[:at] + d + state.digests[at:], state.ids + bytes(8), state.kinds + b"\x01"
    )


def write_index(state_dir: Path, state: ListState, serial: int) -> None:
    write_atomic(state_dir / INDEX_FILE, encode_index(state, serial, int(time.time())))


def prepare(out: Path, n: int) -> None:
    marker = out / f".entries-{n}"
    if marker.exists():
        return
    shutil.rmtree(out, ignore_errors=True)
    (out / "state").mkdir(parents=True)
    started = time.time()
    write_index(out / "state", build_state(n), 1)
    with open(out / "rpz.zone", "w") as f:
        f.write("$ORIGIN rpz.bench.\n$TTL 60\n")
        f.write("@ SOA localhost. root.localhost. 1 3600 600 86400 60\n@ NS localhost.\n")
        for i in range(n):
            name = listed_name(i)
            f.write(f"{name} A {STOP_V4}\n*.{name} A {STOP_V4}\n")
    rng = random.Random(1)
    with open(out / "q-cached.txt", "w") as f:
        f.writelines(f"host{i}.cached.example A\n" for i in range(CACHED))
    with open(out / "q-blocked.txt", "w") as f:
        f.writelines(
            f"www{rng.randrange(1 << 20)}.{listed_name(rng.randrange(n))} A\n"
            for _ in range(500_000)
        )
    marker.touch()
    print(f"data: {n} entries, index and RPZ zone in {time.time() - started:.0f} s", flush=True)


def miss_file(out: Path, tag: str, count: int = 600_000) -> Path:
    path = out / "q-miss-run.txt"
    with open(path, "w") as f:
        f.writelines(f"n{i}.{tag}.miss.example A\n" for i in range(count))
    return path


def mix_file(out: Path, tag: str, n: int, count: int = 600_000) -> Path:
    rng = random.Random(tag)
    path = out / "q-mix-run.txt"
    with open(path, "w") as f:
        for i in range(count):
            r = rng.random()
            if r < 0.90:
                f.write(f"host{rng.randrange(CACHED)}.cached.example A\n")
            elif r < 0.99:
                f.write(f"m{i}.{tag}.miss.example A\n")
            else:
                f.write(f"www.{listed_name(rng.randrange(n))} A\n")
    return path


# ------------------------------------------------------------------ daemons


class Proc:
    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, env: dict) -> None:
        self.name, self.port = name, port
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115
        self.p = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        log.close()

    def rss_mb(self) -> float:
        total = 0
        for pid in [self.p.pid, *children(self.p.pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def query(port: int, name: str, timeout: float = 1.0) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", timeout, port)
    except Exception:
        return None


def first_address(msg: dns.message.Message | None) -> str | None:
    if msg is None:
        return None
    for rrset in msg.answer:
        for rd in rrset:
            if hasattr(rd, "address"):
                return rd.address
    return None


def wait_answer(port: int, name: str, timeout: float, proc: Proc) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        msg = query(port, name, 0.5)
        if msg is not None and msg.rcode() == 0:
            return time.monotonic() - start
        if proc.p.poll() is not None:
            raise SystemExit(f"{proc.name} exited; see its log in {OUT}")
        time.sleep(0.05)
    raise SystemExit(f"{proc.name}: no answer on port {port} within {timeout} s")


def upstream(out: Path, port: int) -> Proc:
    conf = out / "upstream.conf"
    conf.write_text(
        f"""server:
    interface: 127.0.0.1
    port: {port}
    username: ""
    chroot: ""
    directory: "{out}"
    pidfile: ""
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    module-config: "iterator"
    msg-cache-size: 64m
    local-zone: "cached.example." redirect
    local-data: "cached.example. 300 IN A 198.51.100.1"
    local-zone: "miss.example." redirect
    local-data: "miss.example. 300 IN A 198.51.100.2"
    local-zone: "blocked.example." redirect
    local-data: "blocked.example. 300 IN A 198.51.100.3"
    local-zone: "." static
"""
    )
    return Proc("upstream", ["unbound", "-d", "-c", str(conf)], port, out, {})


def start(resolver: str, mode: str, out: Path, up: int) -> Proc:
    port = dns_port()
    state = out / "state"
    work = out / f"{resolver}-{mode}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    if resolver == "unbound":
        modules = {
            "plugin": "python validator iterator",
            "horizon": "python validator iterator",
            "rpz": "respip validator iterator",
        }
        tail = (
            f"rpz:\n    name: rpz.bench\n    zonefile: {out / 'rpz.zone'}\n"
            if mode == "rpz"
            else ""
        )
        conf = unbound_config(
            work,
            port,
            up,
            server_extra="    msg-cache-size: 256m\n    rrset-cache-size: 512m\n",
            modules=modules.get(mode, "validator iterator"),
            tail=tail,
            control=mode == "plugin",
        )
        if mode == "plugin":  # caches at full TTLs, flushed when a new list is taken
            flush = ["unbound-control", "-c", str(conf), "flush_zone", "."]
            settings = plugin_settings(
                work, state / INDEX_FILE, cache_horizon=0, after_change=flush
            )
        else:  # every cached message re-checked within 3 s
            settings = plugin_settings(work, state / INDEX_FILE, cache_horizon=3)
        env = {"CORDON_UNBOUND_CONFIG": str(settings), "PYTHONPATH": UNBOUND_PYTHONPATH}
        return Proc(resolver, ["unbound", "-d", "-c", str(conf)], port, work, env)
    if resolver == "recursor":
        extra: tuple[str, ...] = (
            "--max-cache-entries=2000000",
            "--max-packetcache-entries=2000000",
        )
        if mode == "rpz":
            lua_conf = work / "rpz.lua"
            lua_conf.write_text(f'rpzFile("{out / "rpz.zone"}", {{policyName="cordon"}})\n')
            extra += (f"--lua-config-file={lua_conf}",)
        argv = recursor_argv(
            work,
            port,
            up,
            packetcache_ttl=3 if mode == "horizon" else 86400,
            plugin=mode in ("plugin", "horizon"),
            extra=extra,
        )
        argv = [a for a in argv if a != "--loglevel=5"] + ["--loglevel=3"]
        wipe = ["rec_control", f"--socket-dir={work}", "wipe-cache", ".$"]
        after = {"after_change": wipe} if mode == "plugin" else {}
        settings = lua_settings(work, state / INDEX_FILE, **after)
        env = {"CORDON_LUA_SETTINGS": str(settings), "CORDON_LUA_DIR": str(LUA_DIR)}
        return Proc(resolver, argv, port, work, env)
    conf = dnsdist_config(work, port, up, plugin=mode == "plugin")
    settings = lua_settings(work, state / INDEX_FILE)
    argv = ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]
    return Proc(resolver, argv, port, work, {"CORDON_LUA_SETTINGS": str(settings)})


def dnsperf(port: int, path: Path, seconds: float, once: bool = False) -> float:
    argv = [
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(path),
        "-c",
        "4",
        "-T",
        "1",
        "-q",
        "200",
    ]
    argv += ["-n", "1"] if once else ["-l", str(seconds)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 600).stdout
    for line in out.splitlines():
        if "Queries per second" in line:
            return float(line.split()[-1])
    raise SystemExit(f"dnsperf gave no figure:\n{out[-2000:]}")


def update_latencies(
    proc: Proc, out: Path, n: int, updates: int
) -> tuple[list[float], list[float]]:
    """Seconds from the start of an index write to the name answered as listed; and the write."""
    state = build_state(n)
    latencies, writes = [], []
    for k in range(updates):
        name = f"upd{k}.{proc.name}.cached.example"
        if first_address(query(proc.port, name)) != "198.51.100.1":
            raise SystemExit(f"{name} does not resolve before it is listed")
        state = with_name(state, name)
        started = time.monotonic()
        write_index(out / "state", state, k + 2)
        writes.append(time.monotonic() - started)
        while first_address(query(proc.port, name)) != STOP_V4:
            if time.monotonic() - started > 60:
                raise SystemExit(f"{proc.name}: {name} not enforced after 60 s")
            time.sleep(0.01)
        latencies.append(time.monotonic() - started)
    write_index(out / "state", build_state(n), 1)
    return latencies, writes


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--resolvers", default="unbound,recursor,dnsdist")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-ups below
    for tool in ("unbound", "pdns_recursor", "dnsdist", "dnsperf"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"missing {tool}: apt-get install unbound pdns-recursor dnsdist dnsperf"
            )
    OUT.mkdir(parents=True, exist_ok=True)
    prepare(OUT, args.entries)
    up_port = dns_port()
    up = upstream(OUT, up_port)
    results: dict = {
        "entries": args.entries,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "runs": {},
    }
    try:
        wait_answer(up_port, "x.miss.example", 30, up)
        for resolver in args.resolvers.split(","):
            modes = ["none", "plugin"] + ([] if resolver == "dnsdist" else ["horizon", "rpz"])
            procs: dict[str, Proc] = {}
            runs: dict[str, dict] = {}
            try:
                for mode in modes:  # one at a time, so each load is timed alone
                    proc = procs[mode] = start(resolver, mode, OUT, up_port)
                    load = wait_answer(proc.port, "www.site1.blocked.example", 900, proc)
                    blocked = first_address(query(proc.port, "www.site1.blocked.example"))
                    if (blocked == STOP_V4) != (mode != "none"):
                        raise SystemExit(f"{resolver}/{mode}: www.site1 answered {blocked}")
                    runs[mode] = {"load_s": load, "rss_mb": proc.rss_mb()}
                    dnsperf(proc.port, OUT / "q-cached.txt", 0, once=True)  # warm the 100k names
                # Modes take turns within each round, so a busy moment on the shared machine
                # hits all of them; each figure is the median over the rounds.
                samples: dict[tuple[str, str], list[float]] = {}
                for r in range(args.rounds):
                    for key in ("cached", "miss", "blocked", "mix"):
                        for mode in modes:
                            tag = f"{resolver}{mode}{r}{time.time_ns()}"
                            path = {
                                "cached": OUT / "q-cached.txt",
                                "blocked": OUT / "q-blocked.txt",
                                "miss": miss_file(OUT, tag) if key == "miss" else None,
                                "mix": mix_file(OUT, tag, args.entries) if key == "mix" else None,
                            }[key]
                            qps = dnsperf(procs[mode].port, path, args.seconds)
                            samples.setdefault((mode, key), []).append(qps)
                for (mode, key), values in samples.items():
                    runs[mode][key] = statistics.median(values)
                    runs[mode][key + "_all"] = values
                for mode in modes:
                    runs[mode]["rss_after_mb"] = procs[mode].rss_mb()
                for mode in ("plugin", "horizon"):
                    if mode in procs and args.updates:
                        lat, writes = update_latencies(procs[mode], OUT, args.entries, args.updates)
                        run = runs[mode]
                        run["enforce_p50_s"], run["enforce_p99_s"] = pct(lat, 50), pct(lat, 99)
                        run["enforce_max_s"] = max(lat)
                        run["index_write_median_s"] = statistics.median(writes)
                for mode in modes:
                    results["runs"][f"{resolver}/{mode}"] = runs[mode]
                    print(f"{resolver}/{mode}: {json.dumps(runs[mode])}", flush=True)
            finally:
                for proc in procs.values():
                    proc.stop()
    finally:
        up.stop()
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    report(results)


def cell(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


MODES = {"none": "none", "rpz": "RPZ", "plugin": "plugin", "horizon": "plugin-3s"}


def report(results: dict) -> None:
    runs = results["runs"]
    print(
        f"\nPlugins: {results['entries']} listed names, one thread each, dnsperf -c 4 -q 200, "
        f"{results['seconds']:.0f} s per workload, median of {results['rounds']} interleaved "
        "rounds (shared 2-core machine: compare within a row)"
        "\nplugin = caches flushed by after_change; plugin-3s = cache_horizon / packetcache-ttl 3"
    )
    for resolver in ("unbound", "recursor", "dnsdist"):
        modes = [m for m in MODES if f"{resolver}/{m}" in runs]
        if "plugin" not in modes:
            continue
        r = {m: runs[f"{resolver}/{m}"] for m in modes}
        ratios = [("plugin", "rpz"), ("horizon", "rpz"), ("plugin", "none")]
        ratios = [(a, b) for a, b in ratios if a in r and b in r]
        print(
            f"\n{resolver}\n{'':28}"
            + "".join(f"{MODES[m]:>11}" for m in modes)
            + "".join(f"{MODES[a] + '/' + MODES[b]:>17}" for a, b in ratios)
        )
        for key in ("cached", "miss", "blocked", "mix"):
            print(
                f"{key + ' qps':28}"
                + "".join(cell(r[m][key], 11, 0) for m in modes)
                + "".join(cell(r[a][key] / r[b][key], 17, 2) for a, b in ratios)
            )
        mem = {m: r[m]["rss_mb"] - r["none"]["rss_mb"] for m in modes}
        print(
            f"{'list memory (MB, RSS-none)':28}"
            + "".join(cell(mem[m], 11, 0) for m in modes)
            + "".join(
                cell(mem[a] / mem[b] if b != "none" and mem[b] > 0 else None, 17, 3)
                for a, b in ratios
            )
        )
        print(
            f"{'load to first answer (s)':28}" + "".join(cell(r[m]["load_s"], 11, 1) for m in modes)
        )
        for m in ("plugin", "horizon"):
            if m in r and "enforce_p99_s" in r[m]:
                x = r[m]
                print(
                    f"{MODES[m]}: index written -> enforced on a cached name: "
                    f"p50 {x['enforce_p50_s']:.2f} s, p99 {x['enforce_p99_s']:.2f} s, "
                    f"max {x['enforce_max_s']:.2f} s (index write, median "
                    f"{x['index_write_median_s']:.2f} s)"
                )


if __name__ == "__main__":
    main()
