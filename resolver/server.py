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
import os
import socket
from collections.abc import Callable, Iterable

from resolver import fastpath, proxyv2
from resolver.acl import Acl
from resolver.dnswire import (
    REFUSED,
    FramingError,
    Query,
    TcpDeframer,
    error_response,
    frame,
    truncate_for_udp,
)
from resolver.engine import Resolver
from resolver.ratelimit import ALLOW, SLIP, slip_answer
from resolver.stats import StreamStats


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
        self.paused = False
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
        limiter = resolver.limiter
        proxy = resolver.proxy
        now = resolver.now()  # one clock reading per wake-up, as the C loop has
        for _ in range(DRAIN_MAX):
            try:
                data, addr = recvfrom(_RECV_SIZE)
            except _NO_DATA:
                return
            except OSError:
                continue  # ICMP error queued for an earlier reply: nothing to do
            stats.udp += 1
            try:
                client = addr[0]
                if proxy is not None:  # the real client behind a trusted load balancer
                    stripped = proxy.strip(data, client)
                    if stripped is None:
                        continue
                    data, client = stripped
                if limiter is not None:
                    verdict = limiter.check(client, now)
                    if verdict != ALLOW:
                        self._reply(slip_answer(data) if verdict == SLIP else None, addr)
                        continue
                result = resolver.handle(data, allowed(client), True)
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

    def pause(self) -> None:
        """Stop reading (a reload hands the socket to a new server); replies still go out."""
        if not self.paused:
            self.paused = True
            self.loop.remove_reader(self.sock.fileno())

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.loop.add_reader(self.sock.fileno(), self._drain_fast if self.fast else self._drain)

    async def finish(self, timeout: float) -> None:
        """Let forwards in flight answer (at most `timeout` seconds), then close."""
        self.pause()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pause()
            if self.backlog:
                self.backlog.clear()
                self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        for task in list(self.tasks):
            task.cancel()


class StreamLimits:
    """One stream listener's bounds and counters (plain TCP, or DNS over TLS)."""

    def __init__(
        self, idle_timeout: float, max_connections: int, max_pipelined: int, counts: StreamStats
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_pipelined = max_pipelined
        self.counts = counts
        self.connections: set = set()


class StreamConnection(asyncio.Protocol):
    """What every stream connection shares: admission (the listener's connection bound and
    the ACL), an idle timer, teardown."""

    def __init__(self, resolver: Resolver, acl: Acl, limits: StreamLimits) -> None:
        self.resolver = resolver
        self.acl = acl
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.host = ""
        self.allowed = False
        self.closed = False
        self.activity = False  # set by each query or answer; the idle timer clears it
        self.writing_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limits = self.limits
        if len(limits.connections) >= limits.max_connections:
            limits.counts.rejected += 1
            transport.abort()  # type: ignore[attr-defined]
            self.closed = True
            return
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if peer else ""
        self.allowed = bool(peer) and self.acl.allowed(self.host)
        if self._proxied():
            self.allowed = True  # decided when the header arrives
        if not self.allowed and not self.resolver.refuse:
            transport.abort()  # type: ignore[attr-defined]
            self.closed = True
            return
        limits.counts.connections += 1
        limits.connections.add(self)
        # A client that does not read must not make us buffer without end.
        transport.set_write_buffer_limits(high=64 * 1024)  # type: ignore[attr-defined]
        self._started()
        self._arm()

    def _proxied(self) -> bool:
        """Whether a PROXY header from a trusted sender will name the client."""
        return False

    def _started(self) -> None:
        """The connection is admitted: set up what reading it needs."""

    def _arm(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(self.limits.idle_timeout, self._idle)

    def _active(self) -> bool:
        return self.activity

    def _idle(self) -> None:
        if self.closed:
            return
        if self._active():
            self.activity = False
            self._arm()
            return
        self.limits.counts.timeouts += 1
        self.abort()

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


class TcpConnection(StreamConnection):
    """DNS over TCP (RFC 7766); inside TLS, DNS over TLS (RFC 7858), where `proxy` is off: a
    PROXY header would come before the TLS handshake, outside what this protocol sees."""

    def __init__(
        self, resolver: Resolver, acl: Acl, limits: StreamLimits, proxy: bool = True
    ) -> None:
        super().__init__(resolver, acl, limits)
        self.use_proxy = proxy
        self.deframer = TcpDeframer()
        self.pending = 0
        self.reading_paused = False
        self.eof = False
        self.proxy_head: bytes | None = None  # PROXY v2 header being read (trusted senders)
        self.first = True

    def _proxied(self) -> bool:
        proxy = self.resolver.proxy if self.use_proxy else None
        if proxy is None or not proxy.senders.allowed(self.host):
            return False
        self.proxy_head = b""  # the client is named by the header the sender sends first
        return True

    def _active(self) -> bool:
        return self.activity and not self.writing_paused  # a client that does not read is idle

    def _proxy_header(self, data: bytes) -> bytes | None:
        """Read the PROXY v2 header of a trusted sender; the bytes after it, or None (wait,
        or the connection was closed for a bad header)."""
        proxy = self.resolver.proxy
        head = self.proxy_head + data  # type: ignore[operator]
        if len(head) < proxyv2.needed(head) and head[:12] == proxyv2.SIGNATURE[: len(head)]:
            self.proxy_head = head
            return None
        parsed = proxyv2.parse(head)
        if parsed is None:
            proxy.errors += 1  # type: ignore[union-attr]
            self.abort()
            return None
        client, end = parsed
        if client is not None:
            self.host = client
        self.allowed = self.acl.allowed(self.host)
        self.proxy_head = None
        if not self.allowed and not self.resolver.refuse:
            self.abort()
            return None
        return head[end:]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.first:
            self.first = False
            if self.proxy_head is None and data[:12] == proxyv2.SIGNATURE:
                if self.resolver.proxy is not None:
                    self.resolver.proxy.refused += 1
                self.abort()  # a PROXY header from a sender not trusted
                return
        if self.proxy_head is not None:
            rest = self._proxy_header(data)
            if rest is None:
                return
            data = rest
        try:
            messages = self.deframer.feed(data)
        except FramingError:
            self.limits.counts.errors += 1
            self.abort()
            return
        for msg in messages:
            self.activity = True
            self._query(msg)

    def _query(self, msg: bytes) -> None:
        resolver = self.resolver
        self.limits.counts.queries += 1
        try:
            limiter = resolver.limiter
            if limiter is not None and limiter.check(self.host, resolver.now()) != ALLOW:
                result = error_response(msg, REFUSED)  # over the limit: no slip on TCP
            else:
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


async def drain(connections: Callable[[], Iterable], timeout: float) -> None:
    """Connections already accepted are served until their clients close them (a client that
    sent its query must get its answer), for at most `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and any(not c.closed for c in connections()):
        await asyncio.sleep(0.05)


class Listeners:
    """All sockets of one worker: UDP and TCP on every listen address."""

    def __init__(self, resolver: Resolver, acl: Acl, config) -> None:
        self.resolver = resolver
        self.acl = acl
        self.config = config
        s = config.server
        self.limits = StreamLimits(
            s.tcp_idle_timeout,
            s.tcp_max_connections,
            s.tcp_max_pipelined,
            resolver.stats.streams["tcp"],
        )
        self.udp: list[UdpServer] = []
        self.tcp: list[asyncio.base_events.Server] = []
        self.tcp_by_host: dict[str, asyncio.base_events.Server] = {}
        self.addresses: list[tuple[str, int]] = []

    async def start(self, port: int | None = None, adopt: Listeners | None = None) -> None:
        """Bind every listen address; with `adopt`, take over the sockets of those listeners
        where the address and port are the same (a reload: no datagram or connection waiting
        in the kernel is lost), and bind the rest."""
        s = self.config.server
        port = s.port if port is None else port
        for host in s.listen:
            if adopt is not None and await self._adopt(adopt, host, port):
                continue
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

    async def _adopt(self, old: Listeners, host: str, port: int) -> bool:
        for i, (old_host, old_port) in enumerate(old.addresses):
            if old_host != host or old_port != port or i >= len(old.udp):
                continue
            udp = old.udp[i]
            udp.pause()  # and, in the same step of the loop, this server starts reading
            self.udp.append(UdpServer(self.resolver, self.acl, udp.sock.dup()))
            self.addresses.append((host, port))
            tcp = old.tcp_by_host.get(host)
            if tcp is not None and self.config.server.tcp and tcp.sockets:
                sock = socket.socket(fileno=os.dup(tcp.sockets[0].fileno()))
                sock.setblocking(False)
                server = await asyncio.get_running_loop().create_server(
                    lambda: TcpConnection(self.resolver, self.acl, self.limits),
                    sock=sock,
                    backlog=1024,
                )
                self.tcp.append(server)
                self.tcp_by_host[host] = server
            return True
        return False

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
            self.tcp_by_host[host] = server
        return bound

    def resume(self) -> None:
        """Read again after a reload that failed half-way."""
        for proto in self.udp:
            proto.resume()

    async def retire(self, timeout: float) -> None:
        """A reload's old listeners: accept nothing new, let what is in flight finish (at most
        `timeout` seconds), then close. Sockets a new `Listeners` adopted stay open there."""
        for server in self.tcp:
            server.close()  # closes this server's descriptor; an adopting one keeps its own
        await asyncio.gather(*(proto.finish(timeout) for proto in self.udp))
        await drain(lambda: self.limits.connections, timeout)
        await self.stop()

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
