"""The DoT and DoH listeners of one worker: TLS sockets on their own ports.

DNS over TLS is `TcpConnection` inside TLS (ALPN "dot"); DNS over HTTPS is `DohConnection`
(ALPN "h2", "http/1.1"). Each has its own connection bound and idle timeout; the TLS handshake
must finish within the idle timeout. A reload takes over the listening sockets (duplicated
descriptors, as for UDP and TCP) with a context built from the new configuration, so a renewed
certificate applies to the next connection without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from blocklist.config import ConfigError
from resolver.acl import Acl
from resolver.dohserver import DohConnection
from resolver.engine import Resolver
from resolver.server import StreamLimits, TcpConnection, drain, make_socket
from resolver.stats import StreamStats
from resolver.tls import DOH_ALPN, DOT_ALPN, expiry, server_context

log = logging.getLogger("cordon.resolver")
KINDS = ("dot", "doh")


def _counter(counts: StreamStats) -> Callable[[], None]:
    def no_sni() -> None:
        counts.no_sni += 1

    return no_sni


class EncryptedListeners:
    def __init__(self, resolver: Resolver, acl: Acl, config) -> None:
        self.resolver = resolver
        self.acl = acl
        self.config = config
        streams = resolver.stats.streams
        dot, doh = config.dot, config.doh
        pipelined = config.server.tcp_max_pipelined
        self.limits = {
            "dot": StreamLimits(dot.idle_timeout, dot.max_connections, pipelined, streams["dot"]),
            "doh": StreamLimits(
                doh.idle_timeout, doh.max_connections, doh.max_streams, streams["doh"]
            ),
        }
        self.servers: dict[tuple[str, str, int], asyncio.base_events.Server] = {}

    def _factory(self, kind: str) -> Callable[[], asyncio.Protocol]:
        limits = self.limits[kind]
        if kind == "dot":
            return lambda: TcpConnection(self.resolver, self.acl, limits, proxy=False)
        path = self.config.doh.path
        return lambda: DohConnection(self.resolver, self.acl, limits, path)

    def port(self, kind: str) -> int | None:
        return next((port for k, _h, port in self.servers if k == kind), None)

    async def start(self, adopt: EncryptedListeners | None = None) -> None:
        """Bind (or, with `adopt`, take over) every DoT and DoH address; ConfigError names a
        certificate problem."""
        c = self.config
        loop = asyncio.get_running_loop()
        for kind, alpn in zip(KINDS, (DOT_ALPN, DOH_ALPN), strict=True):
            section = getattr(c, kind)
            if not section.enabled:
                continue
            try:
                context = server_context(c.tls, alpn, _counter(self.limits[kind].counts))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            port = section.port
            for host in section.listen or c.server.listen:
                sock = self._adopted(adopt, kind, host, port)
                if sock is None:
                    sock = make_socket(host, port, socket.SOCK_STREAM)
                try:
                    server = await loop.create_server(
                        self._factory(kind),
                        sock=sock,
                        ssl=context,
                        backlog=1024,
                        ssl_handshake_timeout=section.idle_timeout,
                    )
                except BaseException:
                    sock.close()
                    raise
                bound = sock.getsockname()[1]
                self.servers[(kind, host, bound)] = server
                port = bound  # port 0: every address of this kind on the first one's port
        if self.servers:
            self.resolver.stats.tls_expiry = expiry(c.tls.certificate)
            where = {k: [f"{h}:{p}" for k2, h, p in self.servers if k2 == k] for k in KINDS}
            log.info("encrypted DNS listening", extra={"fields": where | {"doh_path": c.doh.path}})

    @staticmethod
    def _adopted(
        old: EncryptedListeners | None, kind: str, host: str, port: int
    ) -> socket.socket | None:
        if old is None:
            return None
        for (k, h, p), server in old.servers.items():
            if k == kind and h == host and (p == port or port == 0) and server.sockets:
                sock = socket.socket(fileno=os.dup(server.sockets[0].fileno()))
                sock.setblocking(False)
                return sock
        return None

    def connections(self) -> list:
        return [c for limits in self.limits.values() for c in limits.connections]

    def close_servers(self) -> None:
        for server in self.servers.values():
            server.close()

    async def retire(self, timeout: float) -> None:
        """Accept nothing new; serve the connections already open (at most `timeout`)."""
        self.close_servers()
        await drain(self.connections, timeout)
        await self.stop()

    async def stop(self) -> None:
        self.close_servers()
        for conn in self.connections():
            conn.abort()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await server.wait_closed()
