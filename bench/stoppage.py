"""Stop page benchmark: requests per second of one `stoppage serve` process, and page weight.

Runs the real server (uvloop, access log off) on loopback with a DEMO signed list, loads it with
`wrk` (Debian package `wrk`), and compares with a named peer measured in the same run: a bare
aiohttp + uvloop app that returns the same notice bytes from memory with the same headers —
the framework's ceiling for this page, so the ratio is the stop page's own cost (host
canonicalisation, digest lookup, language negotiation, counters, security headers).

    .venv/bin/python bench/stoppage.py [--duration 10] [--connections 64]

Target: >= 5,000 requests/s for the blocked notice; every page <= 15 KB in every language.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stoppage.demo import write_demo  # noqa: E402

HOST = "blocked-demo.test"
URL_HOST = "shared-host.example"
LANGS = ["fr", "en", "ar", "sw", "pt"]
TARGET_RPS = 5000
MAX_PAGE = 15 * 1024

PEER = r"""
import sys, uvloop
from aiohttp import web
body = open(sys.argv[1], "rb").read()
headers = dict(line.split(": ", 1) for line in open(sys.argv[2]).read().splitlines())
async def handle(request):
    return web.Response(body=body, status=451, headers=headers)
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
uvloop.install()
print("peer listening", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[3]), access_log=None, print=None)
"""


def _drain(stream) -> None:
    for _ in stream:
        pass


def start_stoppage(config: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stoppage", "serve", "--config", str(config)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "stop page listening":
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, int(event["port"])
    raise SystemExit(f"stoppage did not start (exit {proc.wait()})")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, host: str, lang: str = "") -> tuple[int, dict, bytes]:
    headers = {"Host": host}
    if lang:
        headers["Accept-Language"] = lang
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def wrk(port: int, host: str, path: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Host: {host}",
            "-H",
            "Accept-Language: fr-FR,fr;q=0.9,en;q=0.8",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat.get("50", "?"), "p99": lat.get("99", "?"), "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-stoppage-"))
    config = write_demo(work, port=0)
    proc, port = start_stoppage(config)
    peer = None
    try:
        print(f"stop page: one process on 127.0.0.1:{port} (DEMO list, uvloop, no access log)")
        print("\npage weight (bytes, uncompressed / gzip):")
        print(f"  {'lang':5} {'notice (451)':>14} {'neutral (200)':>14} {'form':>8} {'status':>8}")
        worst = 0
        for lang in LANGS:
            sizes = []
            for path, host in [
                (f"/?lang={lang}", HOST),
                (f"/?lang={lang}", "allowed.example"),
                (f"/complaint?lang={lang}", HOST),
                (f"/complaint/status?lang={lang}", HOST),
            ]:
                _, _, body = get(port, path, host)
                sizes.append(len(body))
                worst = max(worst, len(body))
            gz = len(gzip.compress(get(port, f"/?lang={lang}", HOST)[2]))
            print(f"  {lang:5} {sizes[0]:>7} / {gz:<5} {sizes[1]:>14} {sizes[2]:>8} {sizes[3]:>8}")
        verdict = "ok" if worst <= MAX_PAGE else "OVER"
        print(f"  largest page: {worst} bytes (limit {MAX_PAGE}: {verdict})")

        status, headers, body = get(port, "/", HOST, "fr-FR,fr;q=0.9,en;q=0.8")
        assert status == 451, status
        (work / "body.html").write_bytes(body)
        keep = [
            "Content-Type",
            "Content-Language",
            "Vary",
            "Link",
            "Content-Security-Policy",
            "Referrer-Policy",
            "X-Content-Type-Options",
            "X-Frame-Options",
            "Cache-Control",
        ]
        (work / "headers.txt").write_text("\n".join(f"{k}: {headers[k]}" for k in keep))
        peer_port = free_port()
        peer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PEER,
                str(work / "body.html"),
                str(work / "headers.txt"),
                str(peer_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert peer.stdout is not None and "peer listening" in peer.stdout.readline()
        for _ in range(100):  # wait until it is bound
            try:
                get(peer_port, "/", HOST)
                break
            except urllib.error.URLError:
                time.sleep(0.05)

        runs = [
            ("blocked notice (domain entry, 451)", port, HOST, "/some/page"),
            ("blocked notice (URL entry, 451)", port, URL_HOST, "/album/42/x.jpg"),
            ("neutral page (200)", port, "allowed.example", "/"),
            ("peer: bare aiohttp, same bytes", peer_port, HOST, "/"),
        ]
        print(f"\nthroughput: wrk -t1 -c{args.connections} -d{args.duration}s, loopback")
        results = {}
        for name, p, host, path in runs:
            get(p, path, host)  # warm the page cache
            r = wrk(p, host, path, args.duration, args.connections)
            results[name] = r
            errs = f"  socket errors: {r['errors'].group(1)}" if r["errors"] else ""
            print(f"  {name:38} {r['rps']:>9.0f} req/s  p50 {r['p50']:>8}  p99 {r['p99']:>8}{errs}")
        blocked = results[runs[0][0]]["rps"]
        peer_rps = results[runs[3][0]]["rps"]
        print(f"\nblocked notice vs peer: {blocked / peer_rps:.2f}x of bare aiohttp")
        print(
            f"target {TARGET_RPS} req/s for the blocked notice: "
            f"{'met' if blocked >= TARGET_RPS else 'NOT met'} ({blocked:.0f})"
        )
    finally:
        for p in (proc, peer):
            if p is not None:
                p.terminate()
                p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
