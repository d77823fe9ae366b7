"""`urlproxy serve`: the list watcher, the plain-HTTP proxy, the TLS splice, metrics and health.

The list is the one `resolver sync` verified and wrote (design §10): the proxy never fetches or
verifies a list itself. /healthz answers 200 only once a list is loaded and the listeners are
up; the resolver diverts hosts here only while it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from blocklist.config import load_config
from blocklist.logs import setup_logging
from blocklist.sync.verified import VerifiedList
from blocklist.sync.watch import StateWatcher
from stoppage.server import bind
from urlproxy.config import UrlProxyConfig
from urlproxy.lookup import ProxyList
from urlproxy.metrics import ProxyMetrics
from urlproxy.origin import OriginResolver
from urlproxy.plain import PlainProxy
from urlproxy.tls import TlsSplice

log = logging.getLogger("cordon.urlproxy")


class _NoVisitorDetails(logging.Filter):
    """aiohttp logs a request it could not handle with the client's address and a traceback
    that may quote the request's bytes; only the kind of failure is kept (design §10)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = "request not handled: %s"
        record.args = (type(exc).__name__ if exc else "unknown",)
        record.exc_info = None
        record.exc_text = None
        return True


SERVER_LOG = logging.getLogger("cordon.urlproxy.http")
SERVER_LOG.addFilter(_NoVisitorDetails())


def _event(message: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, message, extra={"fields": fields})


class UrlProxy:
    def __init__(self, config: UrlProxyConfig) -> None:
        self.config = config
        self.metrics = ProxyMetrics()
        self.resolver = OriginResolver(
            config.origin.resolvers,
            allow_private=config.origin.allow_private_addresses,
            own_addresses=config.server.listen,
            timeout=config.origin.connect_timeout,
        )
        self.plain = PlainProxy(config, self.metrics, self.resolver)
        self.tls = TlsSplice(config, self.metrics, self.resolver, lambda: self.plain.list)
        self.watcher = StateWatcher(
            config.sync.state_dir,
            config.sync.pinned_roots,
            self._on_list,
            interval=1.0,
            max_entries=config.sync.max_entries,
            threshold=config.sync.root_threshold,
        )
        self.http_addresses: list[tuple[str, int]] = []
        self.https_addresses: list[tuple[str, int]] = []
        self.metrics_address: tuple[str, int] | None = None
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self.ready = False

    def _on_list(self, verified: VerifiedList) -> None:
        self.plain.list = lst = ProxyList(verified)
        self.metrics.list_serial.set(verified.serial)
        self.metrics.urlhosts.set(lst.urlhosts)
        _event("list in force", serial=verified.serial, urlhosts=lst.urlhosts)

    async def start(self) -> None:
        c = self.config
        await self.watcher.start()
        if self.watcher.current is None:
            _event(
                "no verified list yet: /healthz fails (so no host is diverted here) until "
                "`resolver sync` writes one",
                logging.WARNING,
                state_dir=str(c.sync.state_dir),
            )
        await self.plain.start()
        app = web.Application(client_max_size=c.server.max_request_body)
        app.router.add_route("*", "/{tail:.*}", self.plain.handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            logger=SERVER_LOG,
            keepalive_timeout=c.server.keepalive_timeout,
            max_line_size=c.server.max_request_line,
            max_field_size=c.server.max_header_bytes,
        )
        await runner.setup()
        self._runners.append(runner)
        for address in c.server.listen:
            sock = bind(address, c.server.http_port)
            await web.SockSite(runner, sock, backlog=1024).start()
            self.http_addresses.append((address, sock.getsockname()[1]))
            if c.server.tls_passthrough:
                tls_sock = bind(address, c.server.https_port)
                server = await asyncio.start_server(self.tls.handle, sock=tls_sock)
                self._servers.append(server)
                self.https_addresses.append((address, tls_sock.getsockname()[1]))
        for address, port in self.http_addresses:
            _event("HTTP listening", host=address, port=port)
        for address, port in self.https_addresses:
            _event("TLS passthrough listening", host=address, port=port)
        m = c.metrics
        if m.enabled:
            mrunner = web.AppRunner(self._metrics_app(), access_log=None, handle_signals=False)
            await mrunner.setup()
            self._runners.append(mrunner)
            sock = bind(m.listen, m.port)
            await web.SockSite(mrunner, sock).start()
            self.metrics_address = (m.listen, sock.getsockname()[1])
            _event("metrics and health listening", host=m.listen, port=self.metrics_address[1])
        self.ready = True

    def _metrics_app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.metrics.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

        async def health(_: web.Request) -> web.Response:
            ok = self.ready and self.plain.list.serial is not None
            return web.json_response(
                {"ok": ok, "serial": self.plain.list.serial}, status=200 if ok else 503
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", health)
        return app

    async def stop(self) -> None:
        self.ready = False
        await self.watcher.stop()
        for server in self._servers:
            server.close()
        for task in list(self.tls.tasks):
            task.cancel()
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.plain.close()


async def run(config: UrlProxyConfig) -> None:
    proxy = UrlProxy(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await proxy.start()
    try:
        await stop.wait()
    finally:
        _event("stopping")
        with contextlib.suppress(Exception):
            await proxy.stop()


def serve(config_path: Path) -> None:
    config = load_config(config_path, UrlProxyConfig)
    setup_logging()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run(config))
