"""UDP and TCP listeners: bytes in, `Resolver.handle`, bytes out.

UDP sockets are read without a transport: a loop reader callback drains a batch of datagrams
and does the synchronous work inline (cache hits, listed names and errors are answered before it
returns); it starts a task only for a query that must go upstream. With the C fast path the
callback is one call into C (recvmmsg, answer, sendmmsg); only what C hands back is handled
here. Without it, `recvfrom`/`Resolver.handle`/`sendto` in Python.

TCP follows RFC 7766: length-prefixed messages, pipelining with answers in completion order,
an idle timeout, a cap on connections and on queries in flight per connection, and
back-pressure from a client that does not read. Sockets are bound with SO_REUSEPORT so several
worker processes can share one port.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import socket

from resolver import fastpath
from resolver.acl import Acl
from resolver.dnswire import (
    FramingError,
    Query,
    TcpDeframer,
    frame,
    truncate_for_udp,
)
from resolver.engine import Resolver


def make_socket(host: str, port: int, kind: int, receive_buffer: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if receive_buffer:
            for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, receive_buffer)
                    break
                except OSError:
                    continue
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


DRAIN_MAX = 64  # datagrams read per wake-up before the loop gets its turn back
FAST_ROUNDS = 4  # C fast path: recvmmsg batches (of _fastpath.BATCH) per wake-up
SEND_BACKLOG = 1024  # replies kept while the socket's send buffer is full
_RECV_SIZE = 65535
_NO_DATA = (BlockingIOError, InterruptedError)


class UdpServer:
    """One UDP socket, read without a transport: the loop calls `_drain` when it is readable.

    `_drain` reads up to DRAIN_MAX datagrams with plain `recvfrom` until the socket would block
    and answers each inline (`Resolver.handle`: listed names, cache hits, errors, refusals), so
    the loop's per-wake-up cost is shared by a batch. Only a query that must go upstream starts a
    task. Replies are sent with `sendto` straight away; when the send buffer is full they wait
    in a bounded backlog sent when the socket is writable (beyond it they are dropped, as the
    kernel drops a datagram it has no room for). The resolver's list and cache references are
    read afresh for each datagram, so a swap applies from the next one.
    """

    def __init__(self, resolver: Resolver, acl: Acl, sock: socket.socket) -> None:
        self.resolver = resolver
        self.acl = acl
        self.sock = sock
        self.tasks: set[asyncio.Task] = set()
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.backlog: collections.deque[tuple[bytes, tuple]] = collections.deque()
        self.fast = resolver.fast
        if self.fast is not None:
            self.fast.set_acl(*fastpath.acl_networks(acl), resolver.refuse)
            self.loop.add_reader(sock.fileno(), self._drain_fast)
        else:
            self.loop.add_reader(sock.fileno(), self._drain)

    def _drain_fast(self) -> None:
        """One call into C answers what it can; the rest is handled as `_drain` would."""
        resolver = self.resolver
        try:
            rest = self.fast.drain(self.sock.fileno(), FAST_ROUNDS, resolver.now())  # type: ignore[union-attr]
        except Exception:
            resolver.errors.report("UDP fast path")
            return
        for reason, data, addr, allowed in rest:
            try:
                if reason == fastpath.UNSENT:
                    self._queue(data, addr)
                else:
                    self._reply(resolver.handle_passed(reason, data, allowed), addr)
            except Exception:
                resolver.errors.report("UDP query")

    def _reply(self, result: bytes | Query | None, addr: tuple) -> None:
        """Send an answer (or keep it while the socket is full), or start a forward task."""
        if result is None:
            return
        if result.__class__ is bytes:
            if self.backlog:
                self._queue(result, addr)  # type: ignore[arg-type]
                return
            try:
                self.sock.sendto(result, addr)  # type: ignore[arg-type]
            except BlockingIOError:
                self._queue(result, addr)  # type: ignore[arg-type]
            except OSError:
                pass  # e.g. the client's address became unreachable: like a lost reply
            return
        task = self.loop.create_task(self._forward(result, addr))  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _drain(self) -> None:
        resolver = self.resolver
        stats = resolver.stats
        allowed = self.acl.allowed
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        for _ in range(DRAIN_MAX):
            try:
                data, addr = recvfrom(_RECV_SIZE)
            except _NO_DATA:
                return
            except OSError:
                continue  # ICMP error queued for an earlier reply: nothing to do
            stats.udp += 1
            try:
                result = resolver.handle(data, allowed(addr[0]), True)
                if result.__class__ is bytes and not self.backlog:
                    try:
                        sendto(result, addr)
                    except BlockingIOError:
                        self._queue(result, addr)  # type: ignore[arg-type]
                    except OSError:
                        pass  # e.g. the client's address became unreachable: like a lost reply
                    continue
                self._reply(result, addr)
            except Exception:
                resolver.errors.report("UDP query")

    async def _forward(self, query: Query, addr: tuple) -> None:
        try:
            resp = await self.resolver.forward(query, True)
            if self.closed:
                return
            if self.backlog:
                self._queue(resp, addr)
                return
            try:
                self.sock.sendto(resp, addr)
            except BlockingIOError:
                self._queue(resp, addr)
            except OSError:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            self.resolver.errors.report("UDP forward")

    def _queue(self, resp: bytes, addr: tuple) -> None:
        """The socket's send buffer is full: keep a bounded backlog and send it when writable."""
        if len(self.backlog) >= SEND_BACKLOG:
            return  # dropped, as the kernel would drop a datagram it has no room for
        if not self.backlog:
            self.loop.add_writer(self.sock.fileno(), self._flush)
        self.backlog.append((resp, addr))

    def _flush(self) -> None:
        backlog = self.backlog
        sendto = self.sock.sendto
        while backlog:
            resp, addr = backlog[0]
            try:
                sendto(resp, addr)
            except BlockingIOError:
                return
            except OSError:
                pass
            backlog.popleft()
        self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            if self.backlog:
                self.backlog.clear()
                self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        for task in list(self.tasks):
            task.cancel()


class TcpLimits:
    def __init__(self, idle_timeout: float, max_connections: int, max_pipelined: int) -> None:
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_pipelined = max_pipelined
        self.connections: set[TcpConnection] = set()


class TcpConnection(asyncio.Protocol):
    def __init__(self, resolver: Resolver, acl: Acl, limits: TcpLimits) -> None:
        self.resolver = resolver
        self.acl = acl
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.deframer = TcpDeframer()
        self.allowed = False
        self.pending = 0
        self.reading_paused = False
        self.writing_paused = False
        self.activity = False
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.resolver.stats
        limits = self.limits
        if len(limits.connections) >= limits.max_connections:
            stats.tcp_rejected += 1
            transport.abort()  # type: ignore[attr-defined]
            self.closed = True
            return
        peer = transport.get_extra_info("peername")
        self.allowed = bool(peer) and self.acl.allowed(peer[0])
        if not self.allowed and not self.resolver.refuse:
            transport.abort()  # type: ignore[attr-defined]
            self.closed = True
            return
        stats.tcp_connections += 1
        limits.connections.add(self)
        # A client that does not read must not make us buffer without end.
        transport.set_write_buffer_limits(high=64 * 1024)  # type: ignore[attr-defined]
        self._arm()

    def _arm(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(self.limits.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.closed:
            return
        if self.activity and not self.writing_paused:
            self.activity = False
            self._arm()
            return
        self.resolver.stats.tcp_timeouts += 1
        self.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            messages = self.deframer.feed(data)
        except FramingError:
            self.resolver.stats.tcp_framing_errors += 1
            self.abort()
            return
        for msg in messages:
            self.activity = True
            self._query(msg)

    def _query(self, msg: bytes) -> None:
        resolver = self.resolver
        resolver.stats.tcp += 1
        try:
            result = resolver.handle(msg, self.allowed, False)
        except Exception:
            resolver.errors.report("TCP query")
            return
        if result is None:
            return
        if result.__class__ is bytes:
            self._send(result)  # type: ignore[arg-type]
            return
        self.pending += 1
        if self.pending >= self.limits.max_pipelined and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        task = asyncio.get_running_loop().create_task(self._forward(result))  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _forward(self, query: Query) -> None:
        try:
            resp = await self.resolver.forward(query, False)
            self._send(resp)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.resolver.errors.report("TCP forward")
        finally:
            self.pending -= 1
            if self.eof and not self.pending and not self.closed:
                self.closed = True
                self.transport.close()  # type: ignore[union-attr]
            if self.reading_paused and self.pending < self.limits.max_pipelined:
                self.reading_paused = False
                if not self.closed and not self.writing_paused:
                    self.transport.resume_reading()  # type: ignore[union-attr]

    def _send(self, resp: bytes) -> None:
        if self.closed:
            return
        if len(resp) > 65535:  # cannot be framed; cannot happen with replies we accept
            resp = truncate_for_udp(resp, 65535)
        self.activity = True
        self.transport.write(frame(resp))  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self.writing_paused = True
        if not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.writing_paused = False
        if not self.closed and not self.reading_paused:
            self.transport.resume_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        # Half-close: finish answering what was asked, then close (RFC 7766 §6.2.4 lets either
        # side close; answers to pipelined queries are still written first).
        if not self.pending:
            return None  # transport closes itself
        self.eof = True
        return True

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.limits.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        for task in list(self.tasks):
            task.cancel()


class Listeners:
    """All sockets of one worker: UDP and TCP on every listen address."""

    def __init__(self, resolver: Resolver, acl: Acl, config) -> None:
        self.resolver = resolver
        self.acl = acl
        self.config = config
        s = config.server
        self.limits = TcpLimits(s.tcp_idle_timeout, s.tcp_max_connections, s.tcp_max_pipelined)
        self.udp: list[UdpServer] = []
        self.tcp: list[asyncio.base_events.Server] = []
        self.addresses: list[tuple[str, int]] = []

    async def start(self, port: int | None = None) -> None:
        s = self.config.server
        port = s.port if port is None else port
        for host in s.listen:
            for attempt in range(20):
                try:
                    bound = await self._bind(host, port)
                    break
                except OSError as exc:
                    # Port 0: UDP got a free port that TCP could not have; pick again.
                    if port != 0 or exc.errno != errno.EADDRINUSE or attempt == 19:
                        raise
            self.addresses.append((host, bound))
            if port == 0:
                port = bound  # every address on the same port

    async def _bind(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        s = self.config.server
        usock = make_socket(host, port, socket.SOCK_DGRAM, s.udp_receive_buffer)
        bound = usock.getsockname()[1]
        tsock = None
        try:
            if s.tcp:
                tsock = make_socket(host, bound, socket.SOCK_STREAM)
            proto = UdpServer(self.resolver, self.acl, usock)
        except BaseException:
            usock.close()
            if tsock is not None:
                tsock.close()
            raise
        self.udp.append(proto)
        if tsock is not None:
            server = await loop.create_server(
                lambda: TcpConnection(self.resolver, self.acl, self.limits),
                sock=tsock,
                backlog=1024,
            )
            self.tcp.append(server)
        return bound

    async def stop(self) -> None:
        for proto in self.udp:
            proto.close()
        for server in self.tcp:
            server.close()
        for conn in list(self.limits.connections):
            conn.abort()
        for server in self.tcp:
            with contextlib.suppress(Exception):
                await server.wait_closed()
