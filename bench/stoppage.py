"""Stop page under the load ASPs see: one `stoppage serve` process, a 1M-domain + 1,000-URL list.

Measured in one run, on loopback, with `wrk` (Debian package `wrk`) sending a random Host (and
path, and Accept-Language among fr/en/ar/sw/pt) on every request, from a Lua script, so no cache
of the server can answer from a previous request:

- random listed hosts, random listed URL paths, random unlisted hosts; keep-alive and a new
  connection per request;
- the peer, in the same run: bare aiohttp + uvloop returning one static 451 page from memory
  (the framework's ceiling; the ratio is the stop page's own cost);
- page weight of every page kind in every language (target <= 15 KB);
- a memory soak: >= 1M requests to random listed hosts, RSS sampled as it goes;
- p99 latency with and without a Prometheus scrape of /metrics and /counters every 5 s.

    .venv/bin/python bench/stoppage.py [--entries 1000000] [--urls 1000] [--duration 10]
        [--connections 64] [--soak 1000000] [--scrape-seconds 30]

Targets (one process): random listed hosts >= 5,000 req/s with new connections and >= 0.5x bare
aiohttp with keep-alive; random unlisted hosts >= 0.7x bare aiohttp; RSS flat (+-10 %) over the
soak; p99 with scrapes within 1.5x of p99 without.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
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

from blocklist.digests import digest  # noqa: E402
from blocklist.entries import canonical_entry  # noqa: E402
from blocklist.state import Kind, ListState  # noqa: E402

LANGS = ["fr", "en", "ar", "sw", "pt"]
MAX_PAGE = 15 * 1024
LISTED = "h{}.listed.test"
URL_HOST = "u{}.shared.test"

CONFIG = """\
[sync]
root_keys = ["{root}"]
state_dir = "sync-state"
authority_url = "http://127.0.0.1:9"

[authority]
name = {{ en = "Bench Authority", fr = "Autorité de mesure" }}
website = "https://authority.example/"
legal_basis = "Bench: the law would be quoted here."

[page]
hotline = {{ name = "Hotline", url = "https://hotline.example/" }}
confidential_help = [{{ name = "Help", url = "https://help.example/", note = "0800 000 000" }}]

[server]
listen = ["127.0.0.1"]
port = 0

[complaints]
state_dir = "stoppage-state"

[metrics]
enabled = true
port = 0
"""

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

LUA = """\
local n = {n}
local urls = {urls}
local kind = "{kind}"
local close = {close}
local langs = {{"fr", "en", "ar", "sw", "pt"}}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end
request = function()
  local headers = {{["Accept-Language"] = langs[math.random(1, 5)] .. ";q=0.9, en;q=0.5"}}
  if close then headers["Connection"] = "close" end
  local path = "/"
  if kind == "listed" then
    headers["Host"] = "h" .. math.random(0, n - 1) .. ".listed.test"
    path = "/p" .. math.random(1, 1000000)
  elseif kind == "url" then
    local j = math.random(0, urls - 1)
    headers["Host"] = "u" .. j .. ".shared.test"
    path = "/p/" .. j .. "/x" .. math.random(1, 1000000) .. ".jpg"
  else
    headers["Host"] = "n" .. math.random(0, 1000000000) .. ".unlisted.test"
  end
  return wrk.format("GET", path, headers)
end
"""


def _write_state(state_dir: Path, state: ListState) -> str:
    # bench/resolver_data.py signs a list as `resolver sync` saves it; loaded by path, because
    # putting bench/ on sys.path would shadow the stoppage package with this file.
    import importlib.util

    spec = importlib.util.spec_from_file_location("resolver_data", ROOT / "bench/resolver_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_state(state_dir, state)


def build_list(state_dir: Path, n: int, urls: int) -> str:
    entries = [(digest(LISTED.format(i)), i + 1, Kind.DOMAIN) for i in range(n)]
    for j in range(urls):
        value = canonical_entry(Kind.URL, f"http://{URL_HOST.format(j)}/p/{j}/")
        entries.append((digest(value), n + j + 1, Kind.URL))
    entries.sort()
    state = ListState(
        b"".join(d for d, _, _ in entries),
        b"".join(i.to_bytes(8, "big") for _, i, _ in entries),
        bytes(int(k) for _, _, k in entries),
    )
    return _write_state(state_dir, state)


def _drain(stream) -> None:
    for _ in stream:
        pass


def start_stoppage(config: Path) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stoppage", "serve", "--config", str(config)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    port = metrics = 0
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "stop page listening":
            port = int(event["port"])
        if event.get("message") == "metrics listening":
            metrics = int(event["port"])
        if port and metrics:
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, port, metrics
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
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, script: Path, seconds: float, connections: int, pid: int = 0) -> dict:
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    cpu = (cpu_seconds(pid) - cpu_before) if pid else float("nan")
    return {
        "cpu_us": cpu / max(1, total) * 1e6,
        "rps": rps,
        "total": total,
        "p50": _ms(lat.get("50", "")),
        "p99": _ms(lat.get("99", "")),
        "errors": errors.group(1) if errors else "",
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def scripts(work: Path, n: int, urls: int) -> dict[str, Path]:
    out = {}
    for kind in ("listed", "url", "unlisted"):
        for close in (False, True):
            name = f"{kind}{'-close' if close else ''}"
            path = work / f"{name}.lua"
            path.write_text(
                LUA.format(n=n, urls=urls, kind=kind, close="true" if close else "false")
            )
            out[name] = path
    return out


def show(name: str, r: dict) -> None:
    errs = f"  socket errors: {r['errors']}" if r["errors"] else ""
    print(
        f"  {name:50} {r['rps']:>8.0f} req/s  p50 {r['p50']:>7.2f} ms  p99 {r['p99']:>7.2f} ms"
        f"  {r['cpu_us']:>5.0f} µs CPU/req{errs}",
        flush=True,
    )


def page_weights(port: int) -> int:
    print("\npage weight (bytes, uncompressed; notice also gzip):")
    print(f"  {'lang':5} {'notice (451)':>14} {'URL notice':>11} {'neutral':>8} {'form':>6}")
    worst = 0
    for lang in LANGS:
        sizes = []
        for path, host in [
            (f"/?lang={lang}", LISTED.format(1)),
            (f"/p/0/a.jpg?lang={lang}", URL_HOST.format(0)),
            (f"/?lang={lang}", "allowed.example"),
            (f"/complaint?lang={lang}", LISTED.format(1)),
        ]:
            sizes.append(len(get(port, path, host)[2]))
        worst = max(worst, *sizes)
        gz = len(gzip.compress(get(port, f"/?lang={lang}", LISTED.format(1))[2]))
        print(f"  {lang:5} {sizes[0]:>7} / {gz:<5} {sizes[1]:>11} {sizes[2]:>8} {sizes[3]:>6}")
    verdict = "ok" if worst <= MAX_PAGE else "OVER"
    print(f"  largest page: {worst} bytes (limit {MAX_PAGE}: {verdict})")
    return worst


def start_peer(work: Path, port: int) -> tuple[subprocess.Popen, int]:
    status, headers, body = get(port, "/", LISTED.format(1), "fr")
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
        [sys.executable, "-c", PEER, str(work / "body.html"), str(work / "headers.txt"),
         str(peer_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert peer.stdout is not None and "peer listening" in peer.stdout.readline()
    wait_until(lambda: get(peer_port, "/", "x.test")[0] == 451, 10, "the peer")
    return peer, peer_port


def scrape(metrics_port: int, stop: threading.Event, out: list[tuple[str, float, int]]) -> None:
    while not stop.is_set():
        for path in ("/metrics", "/counters"):
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=30) as r:
                size = len(r.read())
            out.append((path, time.perf_counter() - started, size))
        stop.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="listed domains")
    parser.add_argument("--urls", type=int, default=1000, help="listed URL entries")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--soak", type=int, default=1_000_000, help="requests in the soak")
    parser.add_argument("--scrape-seconds", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the throughput runs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-stoppage-"))
    procs: list[subprocess.Popen] = []
    try:
        started = time.time()
        root = build_list(work / "sync-state", args.entries, args.urls)
        print(
            f"list: {args.entries} domains + {args.urls} URL entries, signed in "
            f"{time.time() - started:.0f} s"
        )
        config = work / "stoppage.toml"
        config.write_text(CONFIG.format(root=root))
        proc, port, metrics_port = start_stoppage(config)
        procs.append(proc)
        wait_until(lambda: get(port, "/", LISTED.format(7))[0] == 451, 120, "the list")
        print(
            f"stop page: one process on 127.0.0.1:{port} (uvloop, no access log), "
            f"RSS {rss_kb(proc.pid) / 1024:.0f} MB with the list loaded"
        )
        worst = page_weights(port)
        peer, peer_port = start_peer(work, port)
        procs.append(peer)
        lua = scripts(work, args.entries, args.urls)

        c, d = args.connections, args.duration
        print(
            f"\nthroughput: wrk -t1 -c{c} -d{d:g}s, random Host/path/Accept-Language each request"
        )
        for p in (port, peer_port):  # warm both processes up
            wrk(p, lua["listed"], 2, c)
        runs = [
            ("listed hosts, keep-alive", port, "listed"),
            ("peer: bare aiohttp static 451, keep-alive", peer_port, "listed"),
            ("listed hosts, new connection each", port, "listed-close"),
            ("peer: bare aiohttp static 451, new connection each", peer_port, "listed-close"),
            ("listed URL paths, keep-alive", port, "url"),
            ("unlisted hosts (neutral page), keep-alive", port, "unlisted"),
        ]
        # The machine is shared: each scenario runs `repeat` times, interleaved with the peer's,
        # and the median run is kept.
        pids = {port: proc.pid, peer_port: peer.pid}
        r: dict = {}
        for i in range(args.repeat):
            print(f"  round {i + 1} of {args.repeat}", flush=True)
            for name, p, script in runs:
                result = wrk(p, lua[script], d, c, pids[p])
                r.setdefault((script, p), []).append(result)
                show(name, result)

        # Ratios are taken within a round (ours next to the peer's), then the median round.
        def ratio(ours: str, peer: str, key: str = "rps") -> float:
            pairs = zip(r[ours, port], r[peer, peer_port], strict=True)
            if key == "rps":
                values = sorted(a["rps"] / b["rps"] for a, b in pairs)
            else:  # the peer's CPU time per request over ours: throughput if each had a core
                values = sorted(b["cpu_us"] / a["cpu_us"] for a, b in pairs)
            return values[len(values) // 2]

        cpu_ratios = {
            "listed": ratio("listed", "listed", "cpu"),
            "listed-close": ratio("listed-close", "listed-close", "cpu"),
            "url": ratio("url", "listed", "cpu"),
            "unlisted": ratio("unlisted", "listed", "cpu"),
        }

        ratios = {
            "listed": ratio("listed", "listed"),
            "listed-close": ratio("listed-close", "listed-close"),
            "url": ratio("url", "listed"),
            "unlisted": ratio("unlisted", "listed"),
        }
        print("  median of the rounds:")
        for name, p, script in runs:
            ordered = sorted(r[script, p], key=lambda x: x["rps"])
            r[script, p] = ordered[len(ordered) // 2]
            show(name, r[script, p])
        ka, ka_peer = r["listed", port]["rps"], r["listed", peer_port]["rps"]
        nc, nc_peer = r["listed-close", port]["rps"], r["listed-close", peer_port]["rps"]
        url, unl = r["url", port]["rps"], r["unlisted", port]["rps"]
        print("\nratios to the peer (median of the per-round ratios):")
        print(f"  listed, keep-alive        {ratios['listed']:.2f}x  (target >= 0.5x)")
        print(
            f"  listed, new connections   {ratios['listed-close']:.2f}x  "
            f"(median {nc:.0f} req/s, target >= 5000)"
        )
        print(f"  listed URL paths          {ratios['url']:.2f}x")
        print(f"  unlisted, keep-alive      {ratios['unlisted']:.2f}x  (target >= 0.7x)")
        print(
            "  by server CPU time per request (less sensitive to other load on the machine): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in cpu_ratios.items())
        )

        print(f"\nmemory soak: >= {args.soak} requests to random listed hosts, keep-alive")
        done = 0
        samples = []
        chunk = max(5.0, d)
        while done < args.soak:
            res = wrk(port, lua["listed"], chunk, c)
            done += res["total"]
            samples.append((done, rss_kb(proc.pid)))
            print(f"  {done:>9} requests  RSS {samples[-1][1] / 1024:7.1f} MB", flush=True)
        base = samples[0][1]
        peak = max(kb for _, kb in samples)
        end = samples[-1][1]
        drift = (end - base) / base * 100
        print(
            f"  RSS after the first {samples[0][0]} requests {base / 1024:.1f} MB, peak "
            f"{peak / 1024:.1f} MB, end {end / 1024:.1f} MB: {drift:+.1f} % "
            f"(target within +-10 %)"
        )

        s = args.scrape_seconds
        print(
            f"\np99 with and without scrapes (listed hosts, keep-alive, {s:g} s each, "
            f"{args.repeat} interleaved pairs)"
        )
        scrapes: list[tuple[str, float, int]] = []
        pairs = []
        for _ in range(args.repeat):
            quiet = wrk(port, lua["listed"], s, c)
            show("no scrapes", quiet)
            stop = threading.Event()
            thread = threading.Thread(target=scrape, args=(metrics_port, stop, scrapes))
            thread.start()
            busy = wrk(port, lua["listed"], s, c)
            stop.set()
            thread.join()
            show("a /metrics + /counters scrape every 5 s", busy)
            pairs.append((busy["p99"] / quiet["p99"], quiet, busy))
        pairs.sort(key=lambda x: x[0])
        p99_ratio, quiet, busy = pairs[len(pairs) // 2]
        for path in ("/metrics", "/counters"):
            times = [t for p, t, _ in scrapes if p == path]
            size = max(n for p, _, n in scrapes if p == path)
            print(
                f"  {path:10} {len(times)} scrapes, up to {max(times) * 1000:.0f} ms, "
                f"{size / 1024:.0f} KB"
            )
        print(f"  p99 ratio, median pair: {p99_ratio:.2f}x (target <= 1.5x)")
        print(
            "\nsummary: "
            + json.dumps(
                {
                    "ratios": {k: round(v, 2) for k, v in ratios.items()},
                    "cpu_ratios": {k: round(v, 2) for k, v in cpu_ratios.items()},
                    "listed_keepalive": round(ka),
                    "peer_keepalive": round(ka_peer),
                    "listed_new_conn": round(nc),
                    "peer_new_conn": round(nc_peer),
                    "url_keepalive": round(url),
                    "unlisted_keepalive": round(unl),
                    "rss_drift_percent": round(drift, 1),
                    "p99_ratio_scraped": round(p99_ratio, 2),
                    "p99_quiet_ms": quiet["p99"],
                    "p99_scraped_ms": busy["p99"],
                    "largest_page": worst,
                }
            )
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
