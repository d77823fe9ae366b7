"""HTTPS through the proxy: TLS passed through to the origin by SNI, never intercepted.

The proxy reads the ClientHello's server name (urlproxy.sni), checks that the list says the host
carries URL entries, connects to the origin's real address (urlproxy.origin) and then copies
bytes both ways untouched: the client sees the origin's own certificate and the proxy sees no
path, so URL entries cannot be enforced on HTTPS pages here (docs/urlproxy.md says what the
options are). A hello without a usable name, or for another host, is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from urlproxy.config import UrlProxyConfig
from urlproxy.lookup import ProxyList, Route
from urlproxy.metrics import ProxyMetrics
from urlproxy.origin import OriginResolver, OriginUnreachable
from urlproxy.sni import MAX_HELLO, NEED_MORE, NotRoutable, client_hello_name

CHUNK = 65536


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[float]
) -> None:
    """Copy one direction until EOF, noting the time of the last byte in `seen`."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            seen[0] = loop.time()
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    idle: float,
) -> None:
    """Both directions at once, ended after `idle` seconds without a byte either way. One
    watchdog per splice instead of a timer per read: small exchanges stay cheap."""
    loop = asyncio.get_running_loop()
    seen = [loop.time()]
    pipes = asyncio.gather(_pipe(a[0], b[1], seen), _pipe(b[0], a[1], seen))
    try:
        while True:
            left = seen[0] + idle - loop.time()
            if left <= 0:
                break
            done, _ = await asyncio.wait((pipes,), timeout=left)
            if done:
                break
    finally:
        if not pipes.done():
            pipes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pipes


class TlsSplice:
    def __init__(
        self,
        config: UrlProxyConfig,
        metrics: ProxyMetrics,
        resolver: OriginResolver,
        current_list: Callable[[], ProxyList],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.resolver = resolver
        self.current_list = current_list
        self.tasks: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.tasks) >= self.config.server.max_tls_connections:
            self.metrics.tls.labels("refused").inc()
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            if task is not None:
                self.tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s, m = self.config.server, self.metrics
        buf = b""
        try:
            async with asyncio.timeout(s.hello_timeout):
                while True:
                    name = client_hello_name(buf)
                    if name != NEED_MORE:
                        break
                    more = await reader.read(MAX_HELLO - len(buf))
                    if not more:
                        return
                    buf += more
        except (NotRoutable, TimeoutError, OSError):
            m.tls.labels("bad_hello").inc()
            return
        route, host = self.current_list().tls_route(name)
        if route is not Route.ORIGIN or host is None:
            m.tls.labels("refused").inc()
            return
        o = self.config.origin
        origin = None
        try:
            for address in await self.resolver.addresses(host):
                try:
                    async with asyncio.timeout(o.connect_timeout):
                        origin = await asyncio.open_connection(address, o.https_port)
                    break
                except (TimeoutError, OSError):
                    continue
        except OriginUnreachable:
            pass
        if origin is None:
            m.tls.labels("unreachable").inc()
            return
        o_reader, o_writer = origin
        m.tls.labels("spliced").inc()
        m.tls_active.inc()
        try:
            o_writer.write(buf)
            await _splice((reader, writer), (o_reader, o_writer), s.tls_idle_timeout)
        finally:
            m.tls_active.dec()
            o_writer.close()
