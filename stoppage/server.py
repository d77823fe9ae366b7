"""Running the stop page: `stoppage serve --config stoppage.toml`.

One process: the HTTP server on the stop page addresses (port 80), the watcher that follows the
verified list written by `resolver sync`, the complaint forwarder, and a local-only metrics port.
The access log is off; nothing here logs an address, a path or a user agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from blocklist.config import load_config
from blocklist.logs import setup_logging
from blocklist.sync.watch import StateWatcher
from stoppage import privacy
from stoppage.app import StopPage, make_app
from stoppage.config import StoppageConfig
from stoppage.counters import COUNTERS_FILE, HourlyCounters
from stoppage.forwarder import Forwarder
from stoppage.outbox import Outbox
from stoppage.tokens import FormTokens, load_or_create_secret

log = logging.getLogger("cordon.stoppage")


def _event(message: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, message, extra={"fields": fields})


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class StopPageServer:
    def __init__(self, config: StoppageConfig, source: str = "configuration") -> None:
        self.config = config
        c = config.complaints
        self.outbox: Outbox | None = None
        self.tokens: FormTokens | None = None
        self.forwarder: Forwarder | None = None
        if c.enabled:
            self.outbox = Outbox(c.outbox_path)
            secret = load_or_create_secret(c.secret_path)
            self.tokens = FormTokens(
                secret, max_age=c.token_max_age_seconds, min_fill=c.min_fill_seconds
            )
        counters_path = None
        if config.metrics.persist_counters:
            counters_path = c.state_dir / COUNTERS_FILE
        self.counters = HourlyCounters(
            config.metrics.keep_hours, counters_path, config.metrics.max_entries_per_hour
        )
        self.service = StopPage(
            config,
            outbox=self.outbox,
            tokens=self.tokens,
            counters=self.counters,
            on_stored=self._stored,
            source=source,
        )
        if self.outbox is not None:
            self.forwarder = Forwarder(
                self.outbox,
                config.sync.authority_url,
                config.sync.bearer_token,
                retry_initial=c.retry_initial_seconds,
                retry_max=c.retry_max_seconds,
                request_timeout=c.request_timeout,
                poll_interval=c.decision_poll_seconds,
                keep_decided_days=c.keep_decided_days,
                on_result=lambda r: self.service.metrics.forwarding.labels(r).inc(),
            )
        self.watcher = StateWatcher(
            config.sync.state_dir,
            config.sync.pinned_roots,
            self.service.set_list,
            interval=config.server.list_poll_interval,
            max_entries=config.sync.max_entries,
            threshold=config.sync.root_threshold,
        )
        self.addresses: list[tuple[str, int]] = []
        self.metrics_address: tuple[str, int] | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task] = []

    def _stored(self) -> None:
        if self.forwarder is not None:
            self.forwarder.wake()

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def start(self) -> None:
        await self.watcher.start()
        if self.watcher.current is None:
            _event(
                "no verified list yet: every host gets the neutral page until `resolver sync` "
                "writes one",
                logging.WARNING,
                state_dir=str(self.config.sync.state_dir),
            )
        runner = web.AppRunner(make_app(self.service), access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        for address in self.config.server.listen:
            sock = bind(address, self.config.server.port)
            await web.SockSite(runner, sock).start()
            port = sock.getsockname()[1]
            self.addresses.append((address, port))
            _event("stop page listening", host=address, port=port)
        m = self.config.metrics
        if m.enabled:
            metrics = web.AppRunner(self._metrics_app(), access_log=None, handle_signals=False)
            await metrics.setup()
            self._runners.append(metrics)
            sock = bind(m.listen, m.port)
            await web.SockSite(metrics, sock).start()
            self.metrics_address = (m.listen, sock.getsockname()[1])
            _event("metrics listening", host=m.listen, port=self.metrics_address[1])
        if self.forwarder is not None:
            self.forwarder.start()
        if self.counters.path is not None:
            self._tasks.append(asyncio.create_task(self._save_counters()))

    async def _save_counters(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                await asyncio.to_thread(self.counters.save)
            except OSError as exc:
                _event("cannot save counters", logging.ERROR, error=str(exc))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.watcher.stop()
        if self.forwarder is not None:
            await self.forwarder.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        with contextlib.suppress(OSError):
            self.counters.save()
        if self.outbox is not None:
            self.outbox.close()

    # ------------------------------------------------------------ metrics port

    async def _outbox_counts(self) -> dict[str, int]:
        if self.outbox is None:
            return {}
        counts = await self.outbox.counts()
        for state, n in counts.items():
            self.service.metrics.outbox.labels(state).set(n)
        return counts

    def _metrics_app(self) -> web.Application:
        async def metrics(_request: web.Request) -> web.Response:
            await self._outbox_counts()
            body = generate_latest(self.service.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def health(_request: web.Request) -> web.Response:
            current = self.watcher.current
            listed = None
            if current is not None:
                listed = {
                    "serial": current.serial,
                    "entries": len(current.state),
                    "verified_at": current.verified_at,
                    "expires": current.expires,
                    "expired": current.expires <= time.time(),
                }
            body = {
                "list": listed,
                "outbox": await self._outbox_counts(),
                "forwarder_error": self.forwarder.last_error if self.forwarder else None,
            }
            return web.json_response(body, status=200 if current is not None else 503)

        async def counters(request: web.Request) -> web.StreamResponse:
            # One hour per write: finished hours are serialised once and kept, the current one
            # is bounded by max_entries_per_hour, and the loop serves visitors in between.
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for chunk in self.counters.chunks():
                await resp.write(chunk)
                await asyncio.sleep(0)
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", health)
        app.router.add_get("/counters", counters)
        return app


async def run(config: StoppageConfig, source: str) -> None:
    server = StopPageServer(config, source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        _event("stopping")
        await server.stop()


def serve(config_path: Path) -> None:
    config = load_config(config_path, StoppageConfig)
    setup_logging()
    privacy.install()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    asyncio.run(run(config, str(config_path)))


def describe(config: StoppageConfig) -> dict:
    """What `stoppage check` prints: the deployment as the stop page understands it."""
    listen = config.server.listen
    v4 = [a for a in listen if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in listen if ipaddress.ip_address(a).version == 6]
    return {
        "languages": config.page.languages,
        "default_language": config.page.fallback_language,
        "listen": [
            f"[{a}]:{config.server.port}" if ":" in a else f"{a}:{config.server.port}"
            for a in listen
        ],
        "verified_list": str(config.sync.state_dir),
        "authority_url": config.sync.authority_url,
        "complaints": config.complaints.enabled,
        "outbox": str(config.complaints.outbox_path),
        "resolver_blocking": {"ipv4": v4[0] if v4 else "", "ipv6": v6[0] if v6 else ""},
    }


def describe_json(config: StoppageConfig) -> str:
    return json.dumps(describe(config), indent=2)
