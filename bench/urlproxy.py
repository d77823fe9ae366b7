"""URL proxy benchmark: throughput and added latency through `urlproxy serve` against the same
origin reached directly, in the same run, and the proxy's memory over 100k requests.

The origin is nginx (a real, fast origin, so it is never the limit) serving a small page and a
100 KB file on 127.0.0.2; the proxy is one real `urlproxy serve` process on 127.0.0.1 with a
signed list whose URL entry is on the origin's host, and it finds the origin through a built-in
upstream DNS server (the demo's). The peer is that same nginx asked directly. `wrk` (Debian
package `wrk`) loads both: keep-alive, and a new connection per request (`Connection: close`).

    .venv/bin/python bench/urlproxy.py [--duration 10] [--connections 32] [--memory-requests 100000]

Targets (issue): >= 0.7x direct throughput; p99 added latency < 5 ms on loopback (measured with
one connection, so queueing does not hide it); memory flat over 100k requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.demo import ORIGIN_ADDRESS, SHARED_HOST, serve_upstream  # noqa: E402
from blocklist.state import Entry, Kind, ListState  # noqa: E402
from blocklist.sync.local import LocalSigner  # noqa: E402
from blocklist.urlhosts import URLHOST_ID_BASE  # noqa: E402

SMALL = b"<!doctype html><title>ok</title><p>A small page of the shared host.</p>\n"
LARGE = bytes(range(256)) * 400  # 102,400 bytes
HUGE = 1000 * len(LARGE)  # ~100 MB, for bulk transfer through the TLS splice


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_nginx(work: Path, port: int, tls_port: int) -> subprocess.Popen:
    www = work / "www"
    www.mkdir()
    work.chmod(0o755)  # nginx workers may run as another user
    (www / "small.html").write_bytes(SMALL)
    (www / "large.bin").write_bytes(LARGE)
    with open(www / "huge.bin", "wb") as f:  # for the TLS splice's bulk rate
        for _ in range(HUGE // len(LARGE)):
            f.write(LARGE)
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", f"/CN={SHARED_HOST}"),
            *("-addext", f"subjectAltName=DNS:{SHARED_HOST}"),
            *("-keyout", str(work / "origin.key"), "-out", str(work / "origin.pem")),
        ],
        check=True,
        capture_output=True,
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen {ORIGIN_ADDRESS}:{port} reuseport;
        listen {ORIGIN_ADDRESS}:{tls_port} ssl;
        ssl_certificate {work}/origin.pem;
        ssl_certificate_key {work}/origin.key;
        root {www};
    }}
}}
"""
    )
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_url(f"http://{ORIGIN_ADDRESS}:{port}/small.html")
    return proc


def wait_url(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.1)


def start_proxy(
    work: Path, origin_port: int, tls_port: int, dns_port: int
) -> tuple[subprocess.Popen, int, int]:
    now = int(time.time())
    signer = LocalSigner.generate(now)
    state = ListState.from_entries(
        [
            Entry.from_value(f"{SHARED_HOST}/album/42/", 1, Kind.URL),
            Entry.from_value(SHARED_HOST, URLHOST_ID_BASE + 1, Kind.URLHOST),
        ]
    )
    signer.save(work / "sync-state", state, serial=1, now=now)
    http_port, https_port, metrics_port = free_port(), free_port(), free_port()
    config = work / "urlproxy.toml"
    config.write_text(
        f'[sync]\nstate_dir = "{work / "sync-state"}"\nroot_keys = ["{signer.root_text}"]\n'
        f'\n[server]\nlisten = ["127.0.0.1"]\nhttp_port = {http_port}\nhttps_port = {https_port}\n'
        f'\n[origin]\nresolvers = ["127.0.0.1:{dns_port}"]\nhttp_port = {origin_port}\n'
        f"https_port = {tls_port}\n"
        "allow_private_addresses = true\n"
        f'\n[stop_page]\nurl = "http://127.0.0.1:9/"\n'
        f"\n[metrics]\nport = {metrics_port}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "urlproxy", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_url(f"http://127.0.0.1:{metrics_port}/healthz")
    return proc, http_port, https_port


def curl_https(work: Path, address: str, port: int, paths: list[str]) -> float:
    """Seconds for curl to fetch `paths` over one TLS connection to `address`:`port`, with the
    origin's name (SNI) and certificate checked against the origin's own."""
    base = f"https://{SHARED_HOST}:{port}"
    argv = ["curl", "-sS", "--noproxy", "*", "--cacert", str(work / "origin.pem")]
    argv += ["--resolve", f"{SHARED_HOST}:{port}:{address}"]
    for path in paths:
        argv += ["-o", "/dev/null", base + path]
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, seconds: int, connections: int, close: bool) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-H", f"Host: {SHARED_HOST}"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"\b(50|99)%\s+([\d.]+(?:us|ms|s))\b", out))
    if not {"50", "99"} <= pct.keys():
        raise SystemExit(f"cannot read wrk's latency distribution:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50": _ms(pct["50"]),
        "p99": _ms(pct["99"]),
        "requests": total,
        "errors": errors.group(0) if errors else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--memory-requests", type=int, default=100_000)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 1

    loop = asyncio.new_event_loop()
    dns_port = free_port()
    transport = loop.run_until_complete(serve_upstream(dns_port))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="cordon-urlproxy-bench-") as tmp:
        work = Path(tmp)
        try:
            origin_port, tls_port = free_port(ORIGIN_ADDRESS), free_port(ORIGIN_ADDRESS)
            procs.append(start_nginx(work, origin_port, tls_port))
            proxy, proxy_port, proxy_tls = start_proxy(work, origin_port, tls_port, dns_port)
            procs.append(proxy)
            direct = f"http://{ORIGIN_ADDRESS}:{origin_port}"
            through = f"http://127.0.0.1:{proxy_port}"
            results = []
            print(
                "URL proxy vs direct to the same nginx origin, same run, loopback, shared "
                f"2-core machine; wrk -t1, {args.duration} s per row\n"
            )
            head = f"{'workload':34} {'direct rps':>11} {'proxy rps':>10} {'ratio':>6}"
            print(head + f" {'direct p50/p99 ms':>18} {'proxy p50/p99 ms':>17} {'added p99':>9}")
            for name, path in (("small page", "/small.html"), ("100 KB", "/large.bin")):
                for close, conns in (
                    (False, args.connections),
                    (True, args.connections),
                    (False, 1),
                ):
                    label = f"{name}, {'new conn' if close else 'keep-alive'}, c={conns}"
                    d = wrk(direct + path, args.duration, conns, close)
                    p = wrk(through + path, args.duration, conns, close)
                    ratio = p["rps"] / d["rps"]
                    added = p["p99"] - d["p99"]
                    results.append({"workload": label, "direct": d, "proxy": p, "ratio": ratio})
                    print(
                        f"{label:34} {d['rps']:11.0f} {p['rps']:10.0f} {ratio:6.2f} "
                        f"{d['p50']:8.2f}/{d['p99']:<8.2f} {p['p50']:8.2f}/{p['p99']:<8.2f}"
                        f" {added:8.2f}" + (f"  ({p['errors']})" if p["errors"] else "")
                    )

            print("\nHTTPS through the TLS splice vs direct (curl, one TLS connection, best of 3)")
            for label, paths, unit in (
                ("~100 MB download", ["/huge.bin"], "MB/s"),
                ("3000 small pages", ["/small.html"] * 3000, "req/s"),
            ):
                # Best of 3, alternating: single curl runs are at the mercy of a shared machine.
                d = p = float("inf")
                for _ in range(3):
                    d = min(d, curl_https(work, ORIGIN_ADDRESS, tls_port, paths))
                    p = min(p, curl_https(work, "127.0.0.1", proxy_tls, paths))
                amount = HUGE / 1e6 if unit == "MB/s" else len(paths)
                results.append(
                    {"workload": f"https {label}", "direct_s": d, "proxy_s": p, "ratio": d / p}
                )
                print(
                    f"  {label:20} direct {amount / d:9.0f} {unit}   proxy {amount / p:9.0f} "
                    f"{unit}   ratio {d / p:.2f}"
                )

            print(f"\nproxy memory over {args.memory_requests} requests (small page, keep-alive)")
            done = 0
            samples = [(0, rss_kib(proxy.pid))]
            while done < args.memory_requests:
                r = wrk(through + "/small.html", 2, args.connections, False)
                done += r["requests"]
                samples.append((done, rss_kib(proxy.pid)))
            for n, kib in samples:
                print(f"  after {n:>7} requests: RSS {kib / 1024:6.1f} MiB")
            growth = samples[-1][1] - samples[1][1]
            print(f"  growth after the first batch: {growth / 1024:+.1f} MiB")
            print("\n" + json.dumps({"rows": results, "rss_kib": samples}))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            loop.call_soon_threadsafe(transport.close)
            loop.call_soon_threadsafe(loop.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
