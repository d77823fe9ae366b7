"""The primary's sockets: UDP and TCP on asyncio, handing bytes to the `Responder`.

A transfer's messages are rendered in batches on a worker thread, so a million-entry AXFR does
not stall the event loop (other secondaries' SOA checks keep being answered), and each batch is
written with back-pressure (drain) so a slow secondary cannot make the server buffer a zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterator

from resolver.rpz.responder import Reply, Responder

log = logging.getLogger("cordon.rpz.server")
BATCH = 64  # transfer messages rendered per worker-thread hop
MAX_QUERY = 65535

OnReply = Callable[[Reply, int, int], None]  # reply, messages, bytes


class Batches:
    """Takes messages from a reply in batches, knowing when the last batch is taken (one
    message of lookahead), so the reply is accounted for before its last bytes go out."""

    def __init__(self, messages: Iterator[bytes]) -> None:
        self.it = messages
        self.pending = next(messages, None)

    def take(self, n: int) -> tuple[list[bytes], bool]:
        out: list[bytes] = []
        while self.pending is not None and len(out) < n:
            out.append(self.pending)
            self.pending = next(self.it, None)
        return out, self.pending is None


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder, on_reply: OnReply) -> None:
        self.responder = responder
        self.on_reply = on_reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            reply = self.responder.handle(data, addr[0], tcp=False)
        except Exception:
            log.exception("failed to answer a UDP query")
            return
        if reply is None or self.transport is None:
            return
        msg = next(reply.messages, None)
        if msg is not None:
            self.transport.sendto(msg, addr)
            self.on_reply(reply, 1, len(msg))

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass


class RpzServer:
    def __init__(
        self,
        responder: Responder,
        listen: list[str],
        port: int,
        *,
        idle_timeout: float = 30.0,
        max_connections: int = 128,
        on_reply: OnReply | None = None,
    ) -> None:
        self.responder = responder
        self.listen = listen
        self.port = port
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.on_reply = on_reply or (lambda reply, n, size: None)
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._conns: set[asyncio.Task] = set()
        self.bound_port = port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        port = self.port
        for host in self.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # TCP first: with port 0 the kernel picks one, and UDP then takes the same number.
            server = await asyncio.start_server(
                self._tcp_client, host, port, family=family, reuse_address=True
            )
            self._tcp.append(server)
            if port == 0:
                port = server.sockets[0].getsockname()[1]
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self.responder, self.on_reply),
                local_addr=(host, port),
                family=family,
            )
            self._udp.append(transport)  # type: ignore[arg-type]
        self.bound_port = port

    async def stop(self) -> None:
        for t in self._udp:
            t.close()
        for s in self._tcp:
            s.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for s in self._tcp:
            with contextlib.suppress(Exception):
                await s.wait_closed()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= self.max_connections:
            writer.close()
            return
        assert task is not None
        self._conns.add(task)
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                (length,) = struct.unpack("!H", head)
                if length < 12:
                    break  # bad framing: drop the connection
                data = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                reply = self.responder.handle(data, host, tcp=True)
                if reply is None:
                    continue
                await self._send(reply, writer)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping: the connection just closes
        except Exception:
            log.exception("failed to answer a TCP query")
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, reply: Reply, writer: asyncio.StreamWriter) -> None:
        batches = Batches(reply.messages)  # renders the first message here: small and quick
        count = size = 0
        n = 1
        while True:
            if n == 1:
                batch, done = batches.take(1)
            else:
                batch, done = await asyncio.to_thread(batches.take, n)
            out = b"".join(struct.pack("!H", len(m)) + m for m in batch)
            count += len(batch)
            size += len(out)
            if done:
                self.on_reply(reply, count, size)
            writer.write(out)
            if done:
                break
            await writer.drain()
            n = BATCH
