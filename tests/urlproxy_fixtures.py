"""Pieces of the URL proxy tests: a signed list with URL entries, a loopback origin (HTTP and
TLS, with its own certificate), the proxy as a real `urlproxy serve` process, and curl.

Addresses: the proxy listens on 127.0.0.3, the origin on 127.0.0.1; the origin's name resolves
to 127.0.0.1 through a FakeUpstream, the only resolver the proxy is given. Placeholder names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from resolver_fixtures import LOCAL, NOW, ROOT_PUB, FakeUpstream
from tls_fixtures import self_signed

from blocklist.state import Entry, Kind, ListState
from blocklist.urlhosts import URLHOST_ID_BASE

SHARED = "shared-host.example"
BLOCKED = "blocked-demo.test"
LISTED_PATH = "/album/42/"
URL_ID = 1002
DOMAIN_ID = 1001
PROXY_IP = "127.0.0.3"
ORIGIN_IP = "127.0.0.1"
BIG = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)  # 5 MiB, not compressible away


def proxy_list_state() -> ListState:
    return ListState.from_entries(
        [
            Entry.from_value(BLOCKED, DOMAIN_ID, Kind.DOMAIN),
            Entry.from_value(f"{SHARED}{LISTED_PATH}", URL_ID, Kind.URL),
            Entry.from_value(SHARED, URLHOST_ID_BASE + URL_ID, Kind.URLHOST),
        ]
    )


def write_proxy_list(state_dir: Path, serial: int = 1, state: ListState | None = None) -> None:
    LOCAL.save(state_dir, state or proxy_list_state(), serial=serial, now=NOW)


# ---------------------------------------------------------------------------------------------
# Certificates


def make_certificate(directory: Path, name: str = SHARED) -> tuple[Path, Path, str]:
    """A self-signed certificate for `name`: (cert file, key file, SHA-256 fingerprint hex)."""
    return self_signed(directory, name)


# ---------------------------------------------------------------------------------------------
# The origin


@dataclass
class Origin:
    """An HTTP origin (and the same app over TLS) for the shared host: every path answers with
    what it was asked, except a few that test bodies, streaming and posting."""

    directory: Path
    http_port: int = 0
    tls_port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    connections_closed: asyncio.Event = field(default_factory=asyncio.Event)
    _runners: list[web.AppRunner] = field(default_factory=list)

    async def echo(self, request: web.Request) -> web.Response:
        record = {
            "method": request.method,
            "raw_path": request.raw_path,
            "host": request.headers.get("Host"),
            "headers": {k: v for k, v in request.headers.items()},
        }
        self.seen.append(record)
        return web.json_response(record, headers={"X-Origin": "yes"})

    async def big(self, _: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BIG), 100_003):
            await resp.write(BIG[i : i + 100_003])
        await resp.write_eof()
        return resp

    async def post(self, request: web.Request) -> web.Response:
        h = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            size += len(chunk)
        return web.json_response({"sha256": h.hexdigest(), "size": size})

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        block = b"x" * 65536
        try:
            while True:
                await resp.write(block)
        except (ConnectionResetError, OSError, asyncio.CancelledError):
            self.connections_closed.set()
            raise

    async def start(self, cert: Path, key: Path) -> Origin:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/big.bin", self.big)
        app.router.add_get("/chunked.bin", self.chunked)
        app.router.add_post("/upload", self.post)
        app.router.add_get("/endless", self.endless)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, ORIGIN_IP, self.http_port)
        await site.start()
        self.http_port = runner.addresses[0][1]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        tls_site = web.TCPSite(runner, ORIGIN_IP, self.tls_port, ssl_context=ctx)
        await tls_site.start()
        self.tls_port = runner.addresses[1][1]
        return self

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()


# ---------------------------------------------------------------------------------------------
# The proxy, as a real process


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def toml_text(data: dict[str, dict[str, Any]]) -> str:
    out = []
    for section, values in data.items():
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


@dataclass
class ProxyProcess:
    proc: subprocess.Popen
    http_port: int
    https_port: int
    metrics_port: int
    log_path: Path

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/healthz"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_healthy(
    url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None, log: Path | None = None
):
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            if proc is not None and proc.poll() is not None:
                said = log.read_text(errors="replace")[-3000:] if log else ""
                raise AssertionError(f"urlproxy exited with {proc.returncode}:\n{said}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not healthy after {timeout} s")
            await asyncio.sleep(0.05)


async def listening_ports(
    proc: subprocess.Popen, log: Path, timeout: float = 20.0
) -> dict[str, int]:
    """The ports the proxy bound, from its start-up events (it was given port 0)."""
    deadline = time.monotonic() + timeout
    while True:
        ports: dict[str, int] = {}
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if "listening" in event.get("message", ""):
                    ports[event["message"].split()[0]] = int(event["port"])
        if {"HTTP", "TLS", "metrics"} <= ports.keys():
            return ports
        if proc.poll() is not None or time.monotonic() > deadline:
            said = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"urlproxy did not start (exit {proc.poll()}):\n{said}")
        await asyncio.sleep(0.05)


def proxy_config(
    tmp_path: Path, upstream_port: int, peer: Origin, stop_port: int, **overrides: dict
) -> Path:
    data: dict[str, dict[str, Any]] = {
        "sync": {"root_keys": [ROOT_PUB], "state_dir": str(tmp_path / "sync-state")},
        "server": {
            "listen": [PROXY_IP],
            "http_port": 0,  # any free port: the ports are read from the proxy's log
            "https_port": 0,
        },
        "origin": {
            "resolvers": [f"127.0.0.1:{upstream_port}"],
            "http_port": peer.http_port,
            "https_port": peer.tls_port,
            "allow_private_addresses": True,
            "read_timeout": 2.0,
            "connect_timeout": 2.0,
        },
        "stop_page": {"url": f"http://127.0.0.1:{stop_port}/"},
        "metrics": {"port": 0},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "urlproxy.toml"
    path.write_text(toml_text(data))
    return path


@contextlib.asynccontextmanager
async def proxy_process(config: Path) -> AsyncIterator[ProxyProcess]:
    log_path = config.with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "urlproxy", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        ports = await listening_ports(proc, log_path)
        p = ProxyProcess(proc, ports["HTTP"], ports["TLS"], ports["metrics"], log_path)
        await wait_healthy(p.health_url, proc=proc, log=log_path)
        yield p
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Stack:
    origin: Origin
    upstream: FakeUpstream
    proxy: ProxyProcess
    stop_page: Any
    cert: Path
    fingerprint: str
    tmp_path: Path


def origin_upstream() -> FakeUpstream:
    up = FakeUpstream()
    for name in (SHARED, f"www.{SHARED}"):
        up.add(name, "A", ORIGIN_IP, ttl=300)
    return up


async def curl(*args: str, timeout: float = 60.0) -> tuple[int, bytes, str]:
    """Run curl; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--noproxy",
        "*",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out, err.decode(errors="replace")
