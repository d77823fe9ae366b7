"""The upstream client: ask the configured recursive resolvers, in order, and survive them failing.

Queries go out on a UDP socket connected to the upstream, so the kernel picks a random source
port and drops datagrams from any other address; each socket carries at most `socket_queries`
queries (1 = a fresh port for every query) before a new one replaces it. Query ids come from the
kernel's CSPRNG. A reply is taken only if its id, name, type and class match a waiting question;
anything else (spoofed, late, mangled) is counted and ignored while the query keeps waiting.
A truncated reply is fetched again over TCP. An attempt that times out, or gets REFUSED, NOTIMP,
FORMERR or a network error, moves on to the next server. A server that failed `max_failures`
times in a row is put last for `retry_after` seconds; the next real query then probes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time

from resolver.config import UpstreamSection, parse_hostport
from resolver.dnswire import (
    EDE_NETWORK_ERROR,
    EDE_NO_REACHABLE_AUTHORITY,
    FORMERR,
    NOTIMP,
    REFUSED,
    FramingError,
    Query,
    ResponseInfo,
    frame,
    inspect_response,
)
from resolver.stats import Stats, UpstreamStats

_HEADER = struct.Struct("!HHHHHH")
_OPT = struct.Struct("!BHHIH")  # root owner, type, payload size, ext-rcode/version/flags, RDLEN
_RETRY_RCODES = frozenset((REFUSED, NOTIMP, FORMERR))
_DRAIN_MAX = 64  # replies read per wake-up of one channel
_RECV_SIZE = 65535
_MAX_STRAY = 64  # unmatched datagrams tolerated on one attempt before giving up on the socket


class UpstreamError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(UpstreamError("timeout"))


class _Channel:
    """One connected UDP socket to one upstream, shared by up to `socket_queries` queries, whose
    replies are matched to their waiting query by id, then by question.

    The socket is read by a loop reader callback with plain `recv` (no transport), so opening a
    channel is synchronous: concurrent queries never race to open several sockets at once.
    """

    def __init__(self, up: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.up = up
        self.pending: dict[int, tuple[asyncio.Future, Query]] = {}
        self.used = 0
        self.retiring = False
        sock = socket.socket(up.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(up.addr)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        self.loop = loop

    def _readable(self) -> None:
        recv = self.sock.recv  # type: ignore[union-attr]
        for _ in range(_DRAIN_MAX):
            try:
                data = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP errors (port unreachable...) on a connected socket: every query failed.
                self.error_received()
                return
            self.datagram_received(data)
            if self.sock is None:
                return

    def send(self, wire: bytes) -> None:
        try:
            self.sock.send(wire)  # type: ignore[union-attr]
        except BlockingIOError:
            raise  # only this query failed: the send buffer is full
        except OSError:
            self.error_received()
            raise

    def datagram_received(self, data: bytes) -> None:
        errors = self.up.stats.errors
        if len(data) < 12:
            errors["mismatch"] += 1
            return
        waiting = self.pending.get(data[0] << 8 | data[1])
        if waiting is None:
            errors["mismatch"] += 1  # spoofed, or late for a query that timed out
            return
        fut, query = waiting
        info = Upstreams._accept(data, -1, query)
        if info.__class__ is str:
            errors[info] += 1  # type: ignore[index]
            return
        if not fut.done():
            fut.set_result((data, info))

    def error_received(self) -> None:
        for fut, _ in self.pending.values():
            if not fut.done():
                fut.set_exception(UpstreamError("network"))

    def retire(self) -> None:
        self.retiring = True
        if self.up.channel is self:
            self.up.channel = None
        if not self.pending:
            self.close()

    def close(self) -> None:
        sock = self.sock
        if sock is not None:
            self.sock = None
            self.loop.remove_reader(sock.fileno())
            sock.close()
            self.error_received()


class Upstream:
    __slots__ = ("addr", "channel", "down_until", "failures", "family", "name", "stats")

    def __init__(self, host: str, port: int, stats: UpstreamStats, name: str) -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.addr = (host, port)
        self.name = name
        self.stats = stats
        self.failures = 0
        self.down_until = 0.0
        self.channel: _Channel | None = None


def server_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def upstream_names(config: UpstreamSection) -> list[str]:
    """Every upstream the section names (default servers, then per-zone ones), once each."""
    names = [server_name(h, p) for h, p in config.addresses]
    for servers in config.zones.values():
        names += [server_name(*parse_hostport(s)) for s in servers]
    return list(dict.fromkeys(names))


class Upstreams:
    def __init__(self, config: UpstreamSection, stats: Stats) -> None:
        self.config = config
        names = [server_name(h, p) for h, p in config.addresses]
        self.servers = [
            Upstream(host, port, stats.upstreams[name], name)
            for (host, port), name in zip(config.addresses, names, strict=True)
        ]
        self.attempts = config.attempts or len(self.servers)
        self.timeout = config.timeout
        self._ids = memoryview(b"").cast("H")
        self._id_index = 0
        payload = config.edns_payload
        self._opt = {do: _OPT.pack(0, 41, payload, 0x8000 if do else 0, 0) for do in (0, 1)}

    # ------------------------------------------------------------------ order and health

    def _order(self, now: float) -> list[Upstream]:
        servers = self.servers
        if len(servers) == 1:
            return servers
        healthy = [u for u in servers if u.down_until <= now]
        if len(healthy) == len(servers):
            return servers
        resting = sorted((u for u in servers if u.down_until > now), key=lambda u: u.down_until)
        for u in resting:
            u.stats.skipped += 1
        return healthy + resting

    def _failed(self, up: Upstream, kind: str) -> None:
        up.stats.errors[kind] += 1
        up.failures += 1
        if up.failures >= self.config.max_failures:
            up.down_until = time.monotonic() + self.config.retry_after
            up.stats.up = 0

    @staticmethod
    def _succeeded(up: Upstream, seconds: float) -> None:
        up.stats.observe(seconds)
        if up.failures:
            up.failures = 0
            up.down_until = 0.0
            up.stats.up = 1

    # ------------------------------------------------------------------ queries

    def _wire(self, qid: int, query: Query) -> bytes:
        # RD always (we want recursion); CD as the client asked. The name is sent lowercase.
        flags = 0x0100 | (query.flags & 0x0010)
        return (
            _HEADER.pack(qid, flags, 1, 0, 0, 1)
            + query.qname_wire.lower()
            + query.question[-4:]
            + self._opt[query.do]
        )

    async def resolve(self, query: Query) -> tuple[bytes, ResponseInfo] | int:
        """The first acceptable upstream reply, or the EDE code to SERVFAIL with."""
        order = self._order(time.monotonic())
        ede = EDE_NO_REACHABLE_AUTHORITY
        for attempt in range(self.attempts):
            up = order[attempt % len(order)]
            up.stats.queries += 1
            started = time.monotonic()
            try:
                data, info = await self._udp(up, query)
                if info.tc:
                    data, info = await self._tcp(up, query)
            except UpstreamError as exc:
                self._failed(up, exc.kind)
                if exc.kind != "timeout":
                    ede = EDE_NETWORK_ERROR
                continue
            if info.rcode in _RETRY_RCODES:
                self._failed(up, "refused")
                ede = EDE_NETWORK_ERROR
                continue
            self._succeeded(up, time.monotonic() - started)
            return data, info
        return ede

    @staticmethod
    def _accept(data: bytes, qid: int, query: Query) -> ResponseInfo | str:
        """The reply's info when it answers our question, else the kind of error to count.
        `qid` -1: the id was already matched."""
        if qid >= 0 and (len(data) < 12 or (data[0] << 8 | data[1]) != qid):
            return "mismatch"
        info = inspect_response(data)
        if info is None:
            return "malformed"
        if info.qname != query.qname or info.qtype != query.qtype or info.qclass != query.qclass:
            return "mismatch"
        return info

    async def _udp(self, up: Upstream, query: Query) -> tuple[bytes, ResponseInfo]:
        loop = asyncio.get_running_loop()
        channel = up.channel
        if channel is None or channel.retiring:
            channel = self._open_channel(up, loop)
        qid = self._query_id()
        while qid in channel.pending:
            qid = self._query_id()
        fut: asyncio.Future = loop.create_future()
        channel.pending[qid] = (fut, query)
        channel.used += 1
        if channel.used >= self.config.socket_queries:
            channel.retire()  # its last query; the next one opens a socket on a fresh port
        timer = loop.call_later(self.timeout, _expire, fut)
        try:
            channel.send(self._wire(qid, query))
            return await fut
        except OSError:
            raise UpstreamError("network") from None
        finally:
            timer.cancel()
            if channel.pending.get(qid, (None,))[0] is fut:
                del channel.pending[qid]
            if channel.retiring and not channel.pending:
                channel.close()

    @staticmethod
    def _open_channel(up: Upstream, loop: asyncio.AbstractEventLoop) -> _Channel:
        """A new UDP socket connected to `up`: the kernel gives it a random ephemeral port and
        drops datagrams from any other address."""
        try:
            channel = _Channel(up, loop)
        except OSError:
            raise UpstreamError("network") from None
        if up.channel is not None and not up.channel.retiring:
            up.channel.retire()
        up.channel = channel
        return channel

    def _query_id(self) -> int:
        """A query id from the kernel's CSPRNG, drawn in batches (one syscall per 2048 ids)."""
        i = self._id_index
        if i >= len(self._ids):
            self._ids = memoryview(os.urandom(4096)).cast("H")
            i = 0
        self._id_index = i + 1
        return self._ids[i]

    async def _tcp(self, up: Upstream, query: Query) -> tuple[bytes, ResponseInfo]:
        qid = self._query_id()
        writer = None
        try:
            async with asyncio.timeout(self.config.tcp_timeout):
                reader, writer = await asyncio.open_connection(*up.addr)
                writer.write(frame(self._wire(qid, query)))
                while True:
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                    if length < 12:
                        raise FramingError("short frame")
                    data = await reader.readexactly(length)
                    info = self._accept(data, qid, query)
                    if info.__class__ is not str:
                        return data, info  # type: ignore[return-value]
                    up.stats.errors[info] += 1  # type: ignore[index]
        except TimeoutError:
            raise UpstreamError("timeout") from None
        except (OSError, EOFError, FramingError, asyncio.IncompleteReadError):
            raise UpstreamError("tcp") from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
