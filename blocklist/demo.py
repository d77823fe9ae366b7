"""`make demo`: the whole system on this machine, on placeholder names and DEMO keys.

Starts, each as its own process: the authority API, the ASP's sync follower, the blocking
resolver (127.0.0.1:5353; DNS over TLS on 8853, DNS over HTTPS on 8443), the stop page
(127.0.0.1:8080) and the URL proxy (127.0.0.1:8081),
plus a small built-in upstream DNS server so the demo works offline and a demo origin for the
shared host that carries the listed URL (127.0.0.2: an allowed page beside the listed one).
Prints what to try; Ctrl-C stops everything. All state lives in one directory (default
./demo-state, recreated at each start). A port that is taken is replaced by a free one and the
change is announced; the ports used are written to <dir>/demo.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dnslib

from signing.selfsigned import write_self_signed

DEMO_ENTRIES = ["blocked-demo.test", "*.another-demo.test", "http://shared-host.example/album/42/"]
AUTHORITY_NAME = "Demo Authority (DEMO KEYS - NOT FOR PRODUCTION)"
UPSTREAM_ADDRESS = "192.0.2.1"  # what the built-in upstream answers for every unlisted name
TLS_NAME = "dns.demo.test"  # the demo's self-signed certificate for DoT and DoH
SHARED_HOST = "shared-host.example"  # carries the listed URL /album/42/
ORIGIN_ADDRESS = "127.0.0.2"  # the demo origin of SHARED_HOST
ORIGIN_PAGE = "Demo origin: an allowed page of shared-host.example, passed through the URL proxy.\n"


def port_free(port: int) -> bool:
    """Whether our servers could bind `port` on 127.0.0.1 for TCP and UDP. The TCP probe sets
    SO_REUSEADDR as the servers do, so connections of a demo stopped a moment ago (TIME_WAIT)
    do not make the port look taken; a listening socket still does."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def pick_port(name: str, preferred: int, taken: set[int]) -> int:
    """`preferred` when free (0: any free port); otherwise a free port, announced."""
    if preferred and preferred not in taken and port_free(preferred):
        taken.add(preferred)
        return preferred
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken and port_free(port):
            taken.add(port)
            if preferred:
                print(f"Port {preferred} ({name}) is in use: using {port} instead.", flush=True)
            return port


class Upstream(asyncio.DatagramProtocol):
    """A stand-in recursive resolver: every A query gets a documentation address."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            request = dnslib.DNSRecord.parse(data)
        except Exception:
            return
        reply = request.reply()
        if request.q.qtype == dnslib.QTYPE.A:
            name = str(request.q.qname).lower().rstrip(".")
            shared = name == SHARED_HOST or name.endswith("." + SHARED_HOST)
            address = ORIGIN_ADDRESS if shared else UPSTREAM_ADDRESS
            reply.add_answer(
                dnslib.RR(request.q.qname, dnslib.QTYPE.A, rdata=dnslib.A(address), ttl=300)
            )
        self.transport.sendto(reply.pack(), addr)  # type: ignore[attr-defined]


class Demo:
    def __init__(self, directory: Path, ports: dict[str, int], upstream: str | None) -> None:
        self.dir = directory.resolve()
        self.ports = ports
        self.upstream = upstream
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.tokens: dict[str, str] = {}
        self.next_id = 0  # the id the authority gives the next entry

    # ------------------------------------------------------------------ helpers

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, name: str, *args: str) -> None:
        log = open(self.dir / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=self.dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))

    def api(self, method: str, path: str, token: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['authority']}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())

    def wait_http(
        self, url: str, what: str, timeout: float = 60, host: str = "", status: int = 200
    ) -> None:
        """Wait until `url` (with an optional Host header) answers with `status`."""
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(url, headers={"Host": host} if host else {})
        while time.monotonic() < deadline:
            self.check_children()
            try:
                urllib.request.urlopen(request, timeout=2).close()
                code = 200
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            if code == status:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not start; see {self.dir / 'logs'}")

    def check_children(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                log = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{log}")

    # ------------------------------------------------------------------ set-up

    def write_configs(self, root_key: str) -> None:
        p = self.ports
        common_sync = (
            "[sync]\n"
            f'authority_url = "http://127.0.0.1:{p["authority"]}"\n'
            'token_file = "asp.token"\n'
            f'root_keys = ["{root_key}"]\n'
            'list_id = "demo"\n'
            'state_dir = "sync-state"\n'
            'instance = "demo-resolver"\n'
            "long_poll_seconds = 30\n"
        )
        upstream = self.upstream or f"127.0.0.1:{p['upstream']}"
        (self.dir / "resolver.toml").write_text(
            common_sync
            + '\n[rails]\nprotected_names = ["isp.example"]\n'
            + f'\n[server]\nlisten = ["127.0.0.1"]\nport = {p["resolver"]}\n'
            + f'\n[upstream]\nservers = ["{upstream}"]\n'
            + '\n[blocking]\nipv4 = "127.0.0.1"\nipv6 = "::1"\n'
            + f'stop_page_url = "http://127.0.0.1:{p["stoppage"]}/"\n'
            + f'\n[metrics]\nlisten = "127.0.0.1"\nport = {p["resolver_metrics"]}\n'
            + '\n[url_proxy]\nipv4 = "127.0.0.1"\n'
            + f'health_url = "http://127.0.0.1:{p["urlproxy_metrics"]}/healthz"\n'
            + f'\n[tls]\ncertificate = "tls/{TLS_NAME}.crt"\nprivate_key = "tls/{TLS_NAME}.key"\n'
            + f"\n[dot]\nenabled = true\nport = {p['dot']}\n"
            + f"\n[doh]\nenabled = true\nport = {p['doh']}\n"
        )
        write_self_signed(self.dir / "tls", TLS_NAME)
        (self.dir / "urlproxy.toml").write_text(
            '[sync]\nstate_dir = "sync-state"\n'
            f'root_keys = ["{root_key}"]\n'
            f'\n[server]\nlisten = ["127.0.0.1"]\nhttp_port = {p["urlproxy"]}\n'
            "tls_passthrough = false\n"
            f'\n[origin]\nresolvers = ["127.0.0.1:{p["upstream"]}"]\n'
            f"http_port = {p['origin']}\nallow_private_addresses = true  # the demo origin\n"
            f'\n[stop_page]\nurl = "http://127.0.0.1:{p["stoppage"]}/"\n'
            f'\n[metrics]\nlisten = "127.0.0.1"\nport = {p["urlproxy_metrics"]}\n'
        )
        (self.dir / "stoppage.toml").write_text(
            common_sync.replace('instance = "demo-resolver"\n', "")
            + f'\n[authority]\nname = "{AUTHORITY_NAME}"\n'
            'website = "https://authority.example/"\ncontact = "demo@authority.example"\n'
            'legal_basis = "Demo legal basis: this is a demonstration, not a real order."\n'
            '\n[operator]\nname = "Demo ISP"\ncontact = "abuse@isp.example"\n'
            '\n[page]\nhotline = { name = "Report illegal content (demo)", '
            'url = "https://hotline.example/report" }\n'
            'confidential_help = [{ name = "Confidential helpline (demo)", '
            'url = "https://help.example/" }]\n'
            f'\n[server]\nlisten = ["127.0.0.1"]\nport = {p["stoppage"]}\n'
            '\n[complaints]\nstate_dir = "stoppage-state"\nmin_fill_seconds = 1\n'
            f'\n[metrics]\nlisten = "127.0.0.1"\nport = {p["stoppage_metrics"]}\n'
        )

    def setup_authority(self) -> str:
        (self.dir / "authority.toml").write_text(
            f'[authority]\nname = "{AUTHORITY_NAME}"\nlist_id = "demo"\n'
            'state_dir = "authority-state"\n'
            f'\n[api]\nhost = "127.0.0.1"\nport = {self.ports["authority"]}\n'
            '\n[rails]\nprotected_names = ["isp.example"]\n'
            "\n[publication]\nauto_publish_seconds = 1\n"
            "\n[lifecycle]\nscheduler_minutes = 0\n"
        )
        out = self.cli(
            "blocklist.cli",
            "init",
            "--config",
            "authority.toml",
            "--admin",
            "demo-admin",
            "--token-out",
            "admin.token",
        )
        if out.returncode != 0:
            raise RuntimeError(f"blocklist init failed: {out.stderr}")
        root = next(w for w in out.stdout.split() if w.startswith("ed25519:"))
        self.tokens["admin"] = (self.dir / "admin.token").read_text().strip()
        # As in production, the root key leaves the state directory after the ceremony (the
        # service warns while it is there); the demo only moves it aside.
        offline = self.dir / "offline-keys"
        offline.mkdir(mode=0o700, exist_ok=True)
        for key in (self.dir / "authority-state" / "keys").glob("root*.key"):
            key.rename(offline / key.name)
        # The approver is created on the state directory itself: one an admin creates through
        # the API stays inactive until a second person confirms it.
        out = self.cli(
            "blocklist.cli",
            "--json",
            "officer",
            "add",
            "demo-approver",
            "--role",
            "approver",
            "--config",
            "authority.toml",
        )
        if out.returncode != 0:
            raise RuntimeError(f"blocklist officer add failed: {out.stderr}")
        self.tokens["demo-approver"] = json.loads(out.stdout)["token"]
        self.start("authority", "blocklist.cli", "serve", "--config", "authority.toml")
        self.wait_http(f"http://127.0.0.1:{self.ports['authority']}/healthz", "the authority API")
        admin = self.tokens["admin"]
        self.tokens["demo-officer"] = self.api(
            "POST", "/v1/officers", admin, {"name": "demo-officer", "role": "officer"}
        )["token"]
        self.tokens["asp"] = self.api("POST", "/v1/asps", admin, {"name": "demo-isp"})["token"]
        (self.dir / "asp.token").write_text(self.tokens["asp"] + "\n")
        os.chmod(self.dir / "asp.token", 0o600)
        for raw in DEMO_ENTRIES:
            entry = self.api(
                "POST",
                "/v1/entries",
                self.tokens["demo-officer"],
                {"value": raw, "hosting_country": "NL", "evidence": "DEMO-1"},
            )
            self.api("POST", f"/v1/entries/{entry['id']}/approve", self.tokens["demo-approver"])
            self.next_id = max(self.next_id, entry["id"] + 1)  # ids are given in sequence
        self.api("POST", "/v1/publish", self.tokens["demo-officer"])
        for name, token in self.tokens.items():
            (self.dir / f"{name}.token").write_text(token + "\n")
            os.chmod(self.dir / f"{name}.token", 0o600)
        return root

    def wait_blocked(self, name: str, timeout: float = 60) -> dnslib.DNSRecord:
        deadline = time.monotonic() + timeout
        query = dnslib.DNSRecord.question(name, "A").pack()
        while time.monotonic() < deadline:
            self.check_children()
            with (
                contextlib.suppress(OSError, dnslib.DNSError),
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
            ):
                s.settimeout(1)
                s.sendto(query, ("127.0.0.1", self.ports["resolver"]))
                reply = dnslib.DNSRecord.parse(s.recv(4096))
                if any(str(rr.rdata) == "127.0.0.1" for rr in reply.rr):
                    return reply
            time.sleep(0.3)
        raise RuntimeError(f"the resolver did not block {name}; see {self.dir / 'logs'}")

    # ------------------------------------------------------------------ run

    def wait_file(self, path: Path, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            self.check_children()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not appear; see {self.dir / 'logs'}")
            time.sleep(0.1)

    def run(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "logs").mkdir(parents=True)
        root = self.setup_authority()
        self.write_configs(root)
        self.start("sync", "resolver.cli", "sync", "--config", "resolver.toml")
        # The consumers start once the first verified list is on disk: they begin blocking at
        # once instead of warning that there is no list yet.
        self.wait_file(self.dir / "sync-state" / "state.bin", "the first verified list")
        self.start("resolver", "resolver.cli", "serve", "--config", "resolver.toml")
        self.start("stoppage", "stoppage.cli", "serve", "--config", "stoppage.toml")
        self.start("urlproxy", "urlproxy.cli", "serve", "--config", "urlproxy.toml")
        self.wait_blocked("blocked-demo.test")
        self.wait_http(
            f"http://127.0.0.1:{self.ports['urlproxy_metrics']}/healthz", "the URL proxy"
        )
        self.wait_blocked(SHARED_HOST)  # diverted to the proxy once its health check passes
        # Ready once the stop page has loaded the verified list too: a listed host gets 451.
        self.wait_http(
            f"http://127.0.0.1:{self.ports['stoppage']}/",
            "the stop page",
            host="blocked-demo.test",
            status=451,
        )
        state = {
            "dir": str(self.dir),
            "ports": self.ports,
            "root_key": root,
            "pids": {n: p.pid for n, p in self.procs},
        }
        (self.dir / "demo.json").write_text(json.dumps(state, indent=2))
        self.print_help()

    def commands(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """The commands the demo prints, exactly as printed: what to try, a URL entry on a shared
        host, how to block a new name, and how to unblock it again (two people). Each one runs as
        printed in a POSIX shell (tests/test_demo.py runs them)."""
        p, q = self.ports, shlex.quote
        bin_dir = Path(sys.executable).parent
        if (bin_dir / "blocklist").exists():
            blocklist, path = "blocklist", f"PATH={q(str(bin_dir))}:$PATH "
        else:  # not installed as a command: run the module with this Python
            blocklist, path = f"{q(sys.executable)} -m blocklist.cli", ""
        stop = f"http://127.0.0.1:{p['stoppage']}"
        dig = f"dig @127.0.0.1 -p {p['resolver']}"
        token = {n: q(str(self.dir / f"{n}.token")) for n in ("demo-officer", "demo-approver")}
        try_these = [
            f"{dig} blocked-demo.test A          # 127.0.0.1, EDE 16 (Censored) and 4",
            f"{dig} www.another-demo.test AAAA   # below a listed domain: ::1",
            f"{dig} allowed.example A            # forwarded: {UPSTREAM_ADDRESS}",
            f"curl -i -H 'Host: blocked-demo.test' {stop}/            # 451 and the stop page",
            f"curl -H 'Host: blocked-demo.test' {stop}/complaint      # the complaint form",
        ]
        proxy = f"{SHARED_HOST}:{p['urlproxy']}"
        resolve = f"--resolve {proxy}:127.0.0.1 http://{proxy}"
        urls = [
            f"{dig} {SHARED_HOST} A        # 127.0.0.1: the URL proxy (a listed URL is there)",
            f"curl -i {resolve}/album/42/   # 451: the listed URL",
            f"curl {resolve}/album/7/        # the origin's page, through the proxy",
        ]
        block = [
            f"export {path}CORDON_URL=http://127.0.0.1:{p['authority']}",
            f"CORDON_TOKEN_FILE={token['demo-officer']} {blocklist} add new-demo.test "
            "--country NL --evidence DEMO-2",
            f"CORDON_TOKEN_FILE={token['demo-approver']} {blocklist} approve {self.next_id}"
            "   # the id that add printed",
            f"{dig} new-demo.test A              # blocked within seconds: 127.0.0.1",
        ]
        unblock = [
            f"CORDON_TOKEN_FILE={token['demo-officer']} {blocklist} delist {self.next_id} "
            "--reason 'demo over'   # a request: still blocked",
            f"CORDON_TOKEN_FILE={token['demo-approver']} {blocklist} delist confirm {self.next_id}",
            f"{dig} new-demo.test A              # unblocked within seconds: {UPSTREAM_ADDRESS}",
        ]
        encrypted = [
            f"kdig @127.0.0.1 -p {p['dot']} +tls blocked-demo.test A     # DNS over TLS: 127.0.0.1",
            f"kdig @127.0.0.1 -p {p['doh']} +https allowed.example A     "
            f"# DNS over HTTPS: {UPSTREAM_ADDRESS}",
            f"{dig} use-application-dns.net A    # NXDOMAIN: browsers keep this resolver",
        ]
        return try_these, urls, encrypted, block, unblock

    def print_help(self) -> None:
        p, d = self.ports, self.dir
        try_these, urls, encrypted, block, unblock = self.commands()
        encrypted_title = (
            "Encrypted DNS and the browser canary (to verify the demo's self-signed certificate, "
            f"add +tls-ca={d}/tls/{TLS_NAME}.crt +tls-hostname={TLS_NAME})"
        )
        lines = "\n".join
        print(
            f"""
Cordon demo is running (state in {d}; logs in {d}/logs). DEMO keys: not for production.

  authority API   http://127.0.0.1:{p["authority"]}     (tokens in {d}/*.token)
  resolver        127.0.0.1:{p["resolver"]} (UDP and TCP)
  encrypted DNS   DNS over TLS 127.0.0.1:{p["dot"]}, DNS over HTTPS https://127.0.0.1:{p["doh"]}/dns-query
  metrics         http://127.0.0.1:{p["resolver_metrics"]}/metrics
  stop page       http://127.0.0.1:{p["stoppage"]}/
  URL proxy       http://127.0.0.1:{p["urlproxy"]}/     (origin of {SHARED_HOST}: {ORIGIN_ADDRESS})

Try, in another terminal:
{lines("  " + c for c in try_these)}

A URL entry on a shared host: only the listed path is blocked, through the URL proxy:
{lines("  " + c for c in urls)}

{encrypted_title}:
{lines("  " + c for c in encrypted)}

Block a new name (published automatically within a second of the approval):
{lines("  " + c for c in block)}

Unblock it again (two people: one officer asks, another approver confirms):
{lines("  " + c for c in unblock)}

Press Ctrl-C to stop everything.
""",
            flush=True,
        )

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def serve_upstream(port: int) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", port))
    return transport


async def serve_origin(port: int):
    """The demo origin of the shared host: every path answers a small page; the listed one
    never gets here (the URL proxy answers it with the stop page)."""
    from aiohttp import web

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=ORIGIN_PAGE)

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ORIGIN_ADDRESS, port).start()
    return runner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("demo-state"), help="state directory")
    parser.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        help="forward unlisted names here instead of the built-in upstream",
    )
    for name, default in (
        ("authority", 8440),
        ("resolver", 5353),
        ("stoppage", 8080),
        ("urlproxy", 8081),
        ("dot", 8853),
        ("doh", 8443),
    ):
        parser.add_argument(f"--{name}-port", type=int, default=default)
    args = parser.parse_args()
    taken: set[int] = set()
    ports = {
        "authority": pick_port("authority API", args.authority_port, taken),
        "resolver": pick_port("resolver", args.resolver_port, taken),
        "stoppage": pick_port("stop page", args.stoppage_port, taken),
        "resolver_metrics": pick_port("resolver metrics", 9153, taken),
        "stoppage_metrics": pick_port("stop page metrics", 9154, taken),
        "upstream": pick_port("built-in upstream", 0, taken),
        "urlproxy": pick_port("URL proxy", args.urlproxy_port, taken),
        "urlproxy_metrics": pick_port("URL proxy metrics", 9156, taken),
        "origin": pick_port("demo origin", 0, taken),
        "dot": pick_port("DNS over TLS", args.dot_port, taken),
        "doh": pick_port("DNS over HTTPS", args.doh_port, taken),
    }
    demo = Demo(args.dir, ports, args.upstream)
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        upstream = await serve_upstream(ports["upstream"])
        origin = await serve_origin(ports["origin"])
        try:
            await asyncio.to_thread(demo.run)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
                await asyncio.to_thread(demo.check_children)
        finally:
            upstream.close()
            await origin.cleanup()

    try:
        asyncio.run(run())
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        demo.stop()
        return 1
    demo.stop()
    print(f"\nStopped. State kept in {demo.dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
