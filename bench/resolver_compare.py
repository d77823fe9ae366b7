"""Cordon's resolver against Unbound with the same list as RPZ, side by side in the same run.

    python bench/resolver_compare.py OUT_DIR [--entries N] [--seconds S] [--no-python]

OUT_DIR is what bench/resolver_data.py wrote. One Cordon worker against one Unbound thread
(then two against two), both forwarding misses to a third Unbound that answers everything
locally, measured with dnsperf (-c 4 -q 500, one thread) on loopback only. Rows:

  listed names, repeated      10k listed names asked again and again
  unique names below listed   200k distinct names, each below a listed domain
  cache hits, 100k names      100k distinct names, all cached beforehand
  misses, unique names        every name new: forwarded, cached, answered
  mix                         90% hits over the 100k names, 9% unique misses, 1% unique blocked
  mix, 2 workers/threads      the same with two Cordon workers and two Unbound threads
  RSS of the list             resident memory with the list minus without it
  start to first answer       process start to the first answer, list loaded

Each row gives queries per second and, because one dnsperf thread on a shared 2-core machine
often cannot saturate either server, also queries per CPU-second of the server (its user +
system time during the run): the per-core figure. Cordon's pure-Python path
(server.fast_path = false) is measured too, for the speed-up the C path brings. Prints a table
with ratios and writes OUT_DIR/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

CORDON, UNBOUND, UPSTREAM = 5370, 5371, 5372  # Cordon metrics: 5380
PROBE = "www.site1.blocked.example"


def ports_free(ports: list[int]) -> None:
    """Refuse to measure when another process holds a port: with SO_REUSEPORT the kernel would
    quietly share the queries with it. Connections in TIME_WAIT (the last run's metrics
    scrape, say) do not count: only a listener does."""
    for port in ports:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise SystemExit(
                        f"port {port} is in use ({exc}): stop whatever holds it"
                    ) from None


def ask_udp(query: dns.message.Message, port: int) -> dns.message.Message:
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)


def wait_answer(
    port: int,
    timeout: float,
    name: str = PROBE,
    ask: Callable[[dns.message.Message, int], dns.message.Message] = ask_udp,
) -> float:
    """Seconds until `port` answers `name` with NOERROR and an address, asked with `ask`
    (UDP unless told; an `ask` raises DNSException or OSError while the port is not ready)."""
    started = time.monotonic()
    q = dns.message.make_query(name, "A")
    while time.monotonic() - started < timeout:
        try:
            r = ask(q, port)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return time.monotonic() - started
        except (dns.exception.DNSException, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"no answer on port {port} within {timeout} s")


def family(pid: int) -> list[int]:
    """`pid` and its child processes (Cordon's workers)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(stat.parent.name))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all threads) and its children."""
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children, MB."""
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Server:
    def __init__(
        self, name: str, command: list[str], port: int, log: Path, probe: str = PROBE
    ) -> None:
        self.name = name
        started = time.monotonic()
        self.proc = subprocess.Popen(
            command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_answer(port, 900, probe)
        self.start_seconds = time.monotonic() - started
        self.port = port

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def unbound(out: Path, conf: str, port: int, probe: str = PROBE) -> Server:
    command = ["unbound", "-d", "-c", str(out / conf)]
    return Server("unbound", command, port, out / f"{conf}.log", probe)


def cordon(out: Path, conf: str, probe: str = PROBE) -> Server:
    command = [sys.executable, "-m", "resolver.cli", "serve", "--config", str(out / conf)]
    return Server("cordon", [*command, "--log-level", "info"], CORDON, out / f"{conf}.log", probe)


DNSPERF_FIELDS = (
    "Queries per second",
    "Queries sent",
    "Queries lost",
    "Queries completed",
    "Reconnections",  # stream modes (tcp, dot, doh): connections opened again
)


def dnsperf(
    port: int,
    queries: Path,
    seconds: int,
    *,
    once: bool = False,
    clients: int = 4,
    outstanding: int = 500,
    mode: str = "udp",
    options: Sequence[str] = (),
) -> dict[str, float]:
    """One dnsperf run (one thread) against 127.0.0.1:`port`; `mode` is dnsperf's -m (udp,
    tcp, dot, doh) and `options` its long options (-O name=value)."""
    command = ["dnsperf", "-m", mode, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries)]
    command += ["-c", str(clients), "-T", "1", "-q", str(outstanding)]
    command += ["-n", "1"] if once else ["-l", str(seconds)]
    for option in options:
        command += ["-O", option]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    fields: dict[str, float] = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key in DNSPERF_FIELDS and key not in fields:
            fields[key] = float(value.split()[0])
    return fields


def measure(server: Server, queries: Path, seconds: int, port: int | None = None, **options):
    """dnsperf against `server` (or whatever listens on `port` in front of it) for `seconds`,
    with the server's CPU time meanwhile: dnsperf's fields, plus "cpu" (server CPU-seconds) and
    "per_cpu" (queries completed per server CPU-second). `options` go to `dnsperf`."""
    cpu = cpu_seconds(server.proc.pid)
    r = dnsperf(port or server.port, queries, seconds, **options)
    r["cpu"] = cpu_seconds(server.proc.pid) - cpu
    r["per_cpu"] = r["Queries completed"] / r["cpu"] if r["cpu"] else 0.0
    return r


def write_misses(path: Path, tag: str, count: int) -> Path:
    rng = random.Random(tag)
    with path.open("w") as f:
        for i in range(count):
            f.write(f"{tag}{i}.{rng.randrange(1 << 30)}.miss.example A\n")
    return path


def write_mix(path: Path, tag: str, count: int, entries: int) -> Path:
    """90% hits over the 100k cached names, 9% unique misses, 1% unique names below listed."""
    rng = random.Random(tag)
    with path.open("w") as f:
        for i in range(count):
            r = rng.random()
            if r < 0.90:
                f.write(f"host{rng.randrange(100_000)}.cached.example A\n")
            elif r < 0.99:
                f.write(f"{tag}{i}.miss.example A\n")
            else:
                f.write(f"{tag}{i}.site{rng.randrange(entries)}.blocked.example A\n")
    return path


def warm(port: int, out: Path, passes: int = 1, clients: int = 4) -> None:
    for _ in range(passes):
        dnsperf(port, out / "q-cached.txt", 0, once=True, clients=clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-python", action="store_true", help="skip the pure-Python path")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    s = args.seconds
    unique = max(400_000, 60_000 * s)  # more than either resolver answers in S seconds
    rows: dict[str, dict[str, float]] = {}

    def run(row: str, who: str, server: Server, queries: Path) -> None:
        r = measure(server, queries, s)
        qps, cpu, per_core = r["Queries per second"], r["cpu"], r["per_cpu"]
        rows.setdefault(row, {})[who] = qps
        rows[row][who + "_per_cpu"] = per_core
        rows[row][who + "_lost"] = r.get("Queries lost", 0)
        print(
            f"  {row:<34} {who:<8} {qps:>8.0f} qps {cpu / s:>5.2f} cores "
            f"{per_core:>8.0f} per CPU-second, lost {r.get('Queries lost', 0):.0f}",
            flush=True,
        )

    ports_free([CORDON, UNBOUND, UPSTREAM, CORDON + 10])
    upstream = unbound(out, "upstream.conf", UPSTREAM, "x.miss.example")
    servers: list[Server] = [upstream]
    try:
        ub = unbound(out, "unbound.conf", UNBOUND)
        servers.append(ub)
        cd = cordon(out, "cordon.toml")
        servers.append(cd)
        memory = {"unbound": ub.rss(), "cordon": cd.rss()}
        starts = {"unbound": ub.start_seconds, "cordon": cd.start_seconds}
        print(f"started: Cordon {cd.start_seconds:.1f} s, Unbound {ub.start_seconds:.1f} s")

        def single(who: str, server: Server) -> None:
            tag = who[0]
            run("listed names, repeated", who, server, out / "q-blocked-repeat.txt")
            run("unique names below listed", who, server, out / "q-blocked-unique.txt")
            warm(server.port, out)
            run("cache hits, 100k names", who, server, out / "q-cached.txt")
            misses = write_misses(out / "q-miss-run.txt", f"m{tag}", unique)
            run("misses, unique names", who, server, misses)
            mix = write_mix(out / "q-mix-run.txt", f"x{tag}", unique * 2, args.entries)
            run("mix 90/9/1", who, server, mix)

        single("cordon", cd)
        single("unbound", ub)
        memory["cordon_after"] = cd.rss()
        memory["unbound_after"] = ub.rss()
        cd.stop()
        servers.remove(cd)
        if not args.no_python:
            py = cordon(out, "cordon-python.toml")
            servers.append(py)
            single("python", py)
            py.stop()
            servers.remove(py)
        ub.stop()
        servers.remove(ub)

        # Memory of the list itself: the same resolvers with an empty list.
        for name, server in (
            ("cordon_empty", cordon(out, "cordon-empty.toml", "host1.cached.example")),
            ("unbound_empty", unbound(out, "unbound-empty.conf", UNBOUND, "host1.cached.example")),
        ):
            servers.append(server)
            time.sleep(1)  # let start-up allocations settle before reading RSS
            memory[name] = server.rss()
            server.stop()
            servers.remove(server)

        # Two workers against two threads on the mix. Each Cordon worker has its own cache and
        # the kernel spreads clients by address, so the warm-up uses many client sockets.
        ub2 = unbound(out, "unbound-2.conf", UNBOUND)
        servers.append(ub2)
        cd2 = cordon(out, "cordon-2.toml")
        servers.append(cd2)
        warm(CORDON, out, passes=6, clients=16)
        warm(UNBOUND, out, passes=1)
        mix = write_mix(out / "q-mix-run.txt", "y", unique * 3, args.entries)
        run("mix 90/9/1, 2 workers/threads", "cordon", cd2, mix)
        mix = write_mix(out / "q-mix-run.txt", "z", unique * 3, args.entries)
        run("mix 90/9/1, 2 workers/threads", "unbound", ub2, mix)
    finally:
        for server in reversed(servers):
            server.stop()

    list_mb = {
        "cordon": memory["cordon"] - memory["cordon_empty"],
        "unbound": memory["unbound"] - memory["unbound_empty"],
    }
    result = {
        "entries": args.entries,
        "seconds": s,
        "rows": rows,
        "memory_mb": memory,
        "list_mb": list_mb,
        "start_seconds": starts,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print_table(result, not args.no_python)


def print_table(result: dict, python: bool) -> None:
    print()
    print(
        f"Resolver vs Unbound (RPZ), {result['entries']} listed names, dnsperf -c 4 -q 500, "
        f"{result['seconds']} s per run, same run (shared 2-core machine: compare ratios)"
    )
    head = f"| {'workload':<34} | {'Cordon':>9} | {'Unbound':>9} | {'ratio':>6} |"
    head += f" {'per CPU-s ratio':>15} |"
    head += f" {'pure Python':>11} |" if python else ""
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for row, r in result["rows"].items():
        line = f"| {row:<34} | {r['cordon']:>9.0f} | {r['unbound']:>9.0f} |"
        line += f" {r['cordon'] / r['unbound']:>5.2f}x |"
        per_cpu = r["cordon_per_cpu"] / r["unbound_per_cpu"] if r["unbound_per_cpu"] else 0
        line += f" {per_cpu:>14.2f}x |"
        if python:
            line += f" {r['python']:>11.0f} |" if "python" in r else f" {'':>11} |"
        print(line)
    m, lm, st = result["memory_mb"], result["list_mb"], result["start_seconds"]
    print(
        f"| {'RSS after load, MB':<34} | {m['cordon']:>9.0f} | {m['unbound']:>9.0f} |"
        f" {m['cordon'] / m['unbound']:>5.2f}x |"
    )
    print(
        f"| {'RSS of the list, MB':<34} | {lm['cordon']:>9.0f} | {lm['unbound']:>9.0f} |"
        f" {lm['cordon'] / lm['unbound']:>5.2f}x |"
    )
    print(
        f"| {'start to first answer, s':<34} | {st['cordon']:>9.1f} | {st['unbound']:>9.1f} |"
        f" {st['cordon'] / st['unbound']:>5.2f}x |"
    )


if __name__ == "__main__":
    main()
