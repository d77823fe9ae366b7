"""DNS over TLS and DNS over HTTPS: Cordon's listeners against Unbound's own, in the same run.

    python bench/resolver_encrypted.py OUT_DIR [--entries N] [--seconds S] [--doh-method GET]
                                               [--no-udp]

OUT_DIR is what bench/resolver_data.py wrote (bench/resolver.sh runs this after
bench/resolver_ops.py). One Cordon worker with [dot] and [doh] on, against one Unbound 1.17
thread with tls-port and https-port on the same self-signed certificate (ECDSA P-256, made here
with resolver.tls.write_self_signed), both enforcing the list and forwarding misses to the
answer-everything Unbound of bench/resolver_compare.py. dnsperf (one thread, -c 4 -q 500, as
the UDP rows) drives each transport: -m dot (RFC 7858), and -m doh (RFC 8484 over HTTP/2;
GET unless --doh-method POST). Each server advertises 100 concurrent HTTP/2 streams. Rows, on
the query files of the UDP rows:

  listed names, repeated      10k listed names asked again and again (blocked answers)
  cache hits, 100k names      100k distinct names, all cached beforehand
  mix 90/9/1                  90% hits over the 100k names, 9% unique misses, 1% unique blocked
  new connection per query    listed names, each asked on a new connection (-c 64 -q 64,
                              num-queries-per-conn=1): the cost of the TLS handshake (and, for
                              DoH, of HTTP/2 set-up); dnsperf's own handshakes bound the queries
                              per second here, so the per-CPU-second figure is the one to read

UDP on the same processes is measured too, as the reference (--no-udp skips it). Each row gives
queries per second and queries per CPU-second of the server (user + system time during the
run), since one dnsperf thread on a shared 2-core machine often cannot saturate either server.
Prints a table with ratios, Cordon's DoT/DoH counters (connections, timeouts, errors), and
writes OUT_DIR/encrypted.json. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resolver_compare import (
    CORDON,
    PROBE,
    UNBOUND,
    UPSTREAM,
    Server,
    cordon,
    measure,
    ports_free,
    unbound,
    wait_answer,
    warm,
    write_mix,
)

from signing.selfsigned import write_self_signed

CORDON_DOT, CORDON_DOH, UNBOUND_DOT, UNBOUND_DOH = 5373, 5374, 5375, 5376
METRICS = CORDON + 10  # cordon.toml's [metrics] port
DOH_PATH = "/dns-query"
SERVER_NAME = "dns.bench.example"
HANDSHAKE = "new connection per query"
TRANSPORT_NAMES = {"udp": "UDP", "dot": "DoT", "doh": "DoH"}


def write_configs(out: Path) -> Path:
    """A fresh certificate; Cordon's and Unbound's configurations with DoT and DoH on, made from
    the UDP rows' cordon.toml and unbound.conf. Returns the certificate (for the clients)."""
    cert, key = write_self_signed(out / "tls", SERVER_NAME)
    (out / "cordon-encrypted.toml").write_text(
        (out / "cordon.toml").read_text()
        + f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
        + f"\n[dot]\nenabled = true\nport = {CORDON_DOT}\n"
        + f'\n[doh]\nenabled = true\nport = {CORDON_DOH}\npath = "{DOH_PATH}"\n'
    )
    conf = (out / "unbound.conf").read_text()
    plain = "    interface: 127.0.0.1\n"
    if plain not in conf:
        raise SystemExit(f"{out / 'unbound.conf'}: no '{plain.strip()}' line (remake OUT_DIR)")
    # incoming-num-tcp (default 10 per thread) matches Cordon's max_connections (1024).
    encrypted = (
        f"    interface: 127.0.0.1@{UNBOUND}\n"
        f"    interface: 127.0.0.1@{UNBOUND_DOT}\n"
        f"    interface: 127.0.0.1@{UNBOUND_DOH}\n"
        f"    tls-port: {UNBOUND_DOT}\n"
        f"    https-port: {UNBOUND_DOH}\n"
        f'    tls-service-key: "{key}"\n'
        f'    tls-service-pem: "{cert}"\n'
        f'    http-endpoint: "{DOH_PATH}"\n'
        "    http-notls-downstream: no\n"
        "    http-max-streams: 100\n"
        "    incoming-num-tcp: 1024\n"
    )
    (out / "unbound-encrypted.conf").write_text(conf.replace(plain, encrypted, 1))
    return cert


def askers(cert: Path):
    """Query functions for wait_answer over DoT and DoH, trusting only `cert`."""
    context = ssl.create_default_context(cafile=str(cert))

    def dot(query: dns.message.Message, port: int) -> dns.message.Message:
        return dns.query.tls(
            query,
            "127.0.0.1",
            port=port,
            timeout=0.5,
            ssl_context=context,
            server_hostname=SERVER_NAME,
        )

    def doh(query: dns.message.Message, port: int) -> dns.message.Message:
        # httpx itself: dnspython 2.9's DoH client wants the httpx2 package instead.
        wire = "application/dns-message"
        try:
            with httpx.Client(http2=True, verify=context, timeout=0.5) as client:
                r = client.post(
                    f"https://127.0.0.1:{port}{DOH_PATH}",
                    content=query.to_wire(),
                    headers={"content-type": wire, "accept": wire},
                )
        except httpx.HTTPError as exc:  # not listening yet
            raise OSError(str(exc)) from exc
        if r.status_code != 200 or r.http_version != "HTTP/2":
            raise OSError(f"DoH on port {port}: {r.http_version} {r.status_code}")
        return dns.message.from_wire(r.content)

    return {"dot": dot, "doh": doh}


def transport_options(transport: str, port: int, method: str) -> dict:
    if transport == "doh":
        uri = f"doh-uri=https://127.0.0.1:{port}{DOH_PATH}"
        return {"mode": "doh", "options": [uri, f"doh-method={method}"]}
    return {"mode": transport}


def cordon_counters() -> dict[str, float]:
    """Cordon's DoT/DoH counters from its metrics (connections, timeouts, errors, HTTP errors)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as exc:
        print(f"Cordon's metrics unreadable: {exc}")
        return {}
    wanted = re.compile(
        r"^cordon_resolver_(encrypted_\w+|doh_http_errors\w*|internal_errors\w*|"
        r"transport_queries\w*)(\{[^}]*\})? (\S+)$"
    )
    counters = {}
    for line in text.splitlines():
        m = wanted.match(line)
        if m and not m.group(1).endswith("_created"):
            counters[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return counters


def log_problems(log: Path) -> list[str]:
    """Warning and error lines of a server's log."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if re.search(r'"level": "(warning|error|critical)"', line)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--doh-method", choices=("GET", "POST"), default="GET")
    parser.add_argument("--no-udp", action="store_true", help="skip the UDP reference rows")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    s = args.seconds
    unique = max(400_000, 60_000 * s)  # as the UDP rows: more misses than a run answers
    ports_free([CORDON, UNBOUND, UPSTREAM, METRICS, CORDON_DOT, CORDON_DOH])
    ports_free([UNBOUND_DOT, UNBOUND_DOH])
    cert = write_configs(out)
    ask = askers(cert)
    version = subprocess.run(["unbound", "-V"], capture_output=True, text=True).stdout.split()
    unbound_version = version[1] if len(version) > 1 else "?"
    rows: dict[str, dict[str, dict[str, float]]] = {}
    transports = ["dot", "doh"] if args.no_udp else ["udp", "dot", "doh"]

    upstream = unbound(out, "upstream.conf", UPSTREAM, "x.miss.example")
    servers: list[Server] = [upstream]
    try:
        ub = unbound(out, "unbound-encrypted.conf", UNBOUND)
        servers.append(ub)
        cd = cordon(out, "cordon-encrypted.toml")
        servers.append(cd)
        ports = {
            "cordon": {"udp": CORDON, "dot": CORDON_DOT, "doh": CORDON_DOH},
            "unbound": {"udp": UNBOUND, "dot": UNBOUND_DOT, "doh": UNBOUND_DOH},
        }
        for who in ports:
            for transport in ("dot", "doh"):
                wait_answer(ports[who][transport], 60, PROBE, ask[transport])
        print(
            f"Cordon and Unbound {unbound_version} answer on UDP, DoT and DoH "
            f"(started in {cd.start_seconds:.1f} s and {ub.start_seconds:.1f} s)",
            flush=True,
        )
        warm(CORDON, out)
        warm(UNBOUND, out)

        def run(transport: str, workload: str, who: str, server: Server, queries: Path) -> None:
            port = ports[who][transport]
            options = transport_options(transport, port, args.doh_method)
            if workload == HANDSHAKE:
                options["clients"] = options["outstanding"] = 64
                options["options"] = [*options.get("options", []), "num-queries-per-conn=1"]
            r = measure(server, queries, s, port, **options)
            row = rows.setdefault(f"{transport} {workload}", {})
            row[who] = r
            print(
                f"  {TRANSPORT_NAMES[transport]:<4} {workload:<26} {who:<8} "
                f"{r['Queries per second']:>8.0f} qps {r['cpu'] / s:>5.2f} cores "
                f"{r['per_cpu']:>8.0f} per CPU-second, lost {r.get('Queries lost', 0):.0f}, "
                f"reconnections {r.get('Reconnections', 0):.0f}",
                flush=True,
            )

        for transport in transports:
            for who, server in (("cordon", cd), ("unbound", ub)):
                run(transport, "listed names, repeated", who, server, out / "q-blocked-repeat.txt")
            for who, server in (("cordon", cd), ("unbound", ub)):
                run(transport, "cache hits, 100k names", who, server, out / "q-cached.txt")
            for who, server in (("cordon", cd), ("unbound", ub)):
                # Misses new to this server: a tag of its own per transport.
                tag = f"e{who[0]}{transport}"
                mix = write_mix(out / "q-mix-encrypted.txt", tag, unique * 2, args.entries)
                run(transport, "mix 90/9/1", who, server, mix)
            if transport != "udp":
                for who, server in (("cordon", cd), ("unbound", ub)):
                    run(transport, HANDSHAKE, who, server, out / "q-blocked-repeat.txt")
        counters = cordon_counters()
    finally:
        for server in reversed(servers):
            server.stop()
    problems = log_problems(out / "cordon-encrypted.toml.log")
    result = {
        "entries": args.entries,
        "seconds": s,
        "doh_method": args.doh_method,
        "unbound_version": unbound_version,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "rows": rows,
        "cordon_counters": counters,
        "cordon_log_problems": len(problems),
        "cordon_log_first_problems": problems[:5],
    }
    (out / "encrypted.json").write_text(json.dumps(result, indent=2))
    print_table(result)


def print_table(result: dict) -> None:
    print()
    print(
        f"DoT and DoH: Cordon (1 worker) vs Unbound {result['unbound_version']} (1 thread, RPZ), "
        f"{result['entries']} listed names, dnsperf -T 1 -c 4 -q 500, {result['seconds']} s per "
        f"run, same run, DoH over HTTP/2 with {result['doh_method']}, {result['date']}."
    )
    print(
        "The machine may be shared with other work: compare the ratios, the per-CPU-second "
        "ones above all."
    )
    head = (
        f"| {'transport':<9} | {'workload':<26} | {'Cordon q/s':>10} | {'Unbound q/s':>11} |"
        f" {'ratio':>6} | {'Cordon q/CPU-s':>14} | {'Unbound q/CPU-s':>15} | {'ratio':>6} |"
        f" {'lost C/U':>11} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for key, r in result["rows"].items():
        transport, workload = key.split(" ", 1)
        c, u = r["cordon"], r["unbound"]
        qps_c, qps_u = c["Queries per second"], u["Queries per second"]
        ratio = qps_c / qps_u if qps_u else 0.0
        per_cpu = c["per_cpu"] / u["per_cpu"] if u["per_cpu"] else 0.0
        lost = f"{c.get('Queries lost', 0):.0f}/{u.get('Queries lost', 0):.0f}"
        print(
            f"| {TRANSPORT_NAMES[transport]:<9} | {workload:<26} | {qps_c:>10.0f} |"
            f" {qps_u:>11.0f} | {ratio:>5.2f}x | {c['per_cpu']:>14.0f} |"
            f" {u['per_cpu']:>15.0f} | {per_cpu:>5.2f}x | {lost:>11} |"
        )
    counters = result["cordon_counters"]
    print("\nCordon's counters after the runs:")
    for name, value in sorted(counters.items()):
        if value:
            print(f"  {name} {value:.0f}")
    problems = result["cordon_log_problems"]
    print(f"Cordon's log: {problems} warning or error lines" + (":" if problems else ""))
    for line in result["cordon_log_first_problems"]:
        print(f"  {line[:200]}")


if __name__ == "__main__":
    main()
