"""Shared pieces of the resolver tests: signed lists on disk, a fake upstream, configs, clients.

`write_list` writes `state.bin` exactly as `resolver sync` would (a real signed notification and
snapshot under a test root key). `FakeUpstream` is a small DNS server on 127.0.0.1 (UDP and TCP)
whose answers, delays and silences each test controls. Everything only touches loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from blocklist.config import ConfigError, load_config, validate_config
from blocklist.state import Entry, Kind, ListState
from blocklist.sync.local import LocalSigner
from blocklist.sync.verified import VerifiedList
from resolver.config import ResolverConfig
from resolver.service import ResolverService

NOW = int(time.time())
LOCAL = LocalSigner.generate(NOW)
ROOT_PUB = LOCAL.root_text
AUTHORITY = "Test Authority"
STOP_V4 = "192.0.2.80"
STOP_V6 = "2001:db8::80"
STOP_URL = "http://stop.isp.example/"


def list_state(
    domains: Iterable[str] = (), urls: Iterable[str] = (), first_id: int = 1
) -> ListState:
    entries = []
    next_id = first_id
    for value in domains:
        entries.append(Entry.from_value(value, next_id, Kind.DOMAIN))
        next_id += 1
    for value in urls:
        entries.append(Entry.from_value(value, next_id, Kind.URL))
        next_id += 1
    return ListState.from_entries(entries)


def entry_ids(state: ListState) -> dict[bytes, int]:
    return {e.digest: e.entry_id for e in state}


def write_state(
    state_dir: Path, state: ListState, serial: int, authority: str = AUTHORITY
) -> VerifiedList:
    """Persist `state` as a verified list, as the sync follower would."""
    return LOCAL.save(state_dir, state, serial=serial, now=NOW, authority=authority)


def write_list(
    state_dir: Path, domains: Iterable[str], serial: int = 1, urls: Iterable[str] = ()
) -> VerifiedList:
    return write_state(state_dir, list_state(domains, urls), serial)


def make_config(
    state_dir: Path, upstreams: list[int] | list[str], **sections: Any
) -> ResolverConfig:
    """A config on loopback, port 0 (any free port), fast list polling; `sections` override."""
    data: dict[str, Any] = {
        "sync": {"root_keys": [ROOT_PUB], "state_dir": str(state_dir)},
        "server": {"listen": ["127.0.0.1"], "port": 0, "list_poll_interval": 0.05},
        "upstream": {
            "servers": [u if isinstance(u, str) else f"127.0.0.1:{u}" for u in upstreams],
            "timeout": 0.4,
            "retry_after": 30,
        },
        "blocking": {
            "ipv4": STOP_V4,
            "ipv6": STOP_V6,
            "stop_page_url": STOP_URL,
        },
        "metrics": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return validate_config(data, ResolverConfig, "test")


def config_error(path: Path, text: str) -> str:
    """The error `resolver.toml` holding `text` is refused with; it must name the file."""
    path.write_text(text)
    try:
        load_config(path, ResolverConfig)
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)
        return str(exc)
    raise AssertionError(f"accepted: {text!r}")


@contextlib.asynccontextmanager
async def running(config: ResolverConfig):
    service = ResolverService(config)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


# ---------------------------------------------------------------------------------------------
# Clients


def query(
    name: str,
    rdtype: str | int = "A",
    *,
    edns: bool = True,
    payload: int = 1232,
    do: bool = False,
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=payload)
    if do:
        q.want_dnssec(True)
    return q


async def ask(
    port: int, q: dns.message.Message | str, rdtype: str | int = "A", **kw: Any
) -> dns.message.Message:
    if isinstance(q, str):
        q = query(q, rdtype, **kw)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=False)


async def ask_tcp(port: int, q: dns.message.Message | str, rdtype: str | int = "A", **kw: Any):
    if isinstance(q, str):
        q = query(q, rdtype, **kw)
    return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)


async def ask_raw(
    port: int, wire: bytes, timeout: float = 2.0, host: str = "127.0.0.1"
) -> bytes | None:
    """Send raw bytes over UDP; the reply's bytes, or None on silence."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, wire)
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except TimeoutError:
            return None
    finally:
        sock.close()


def ede(msg: dns.message.Message) -> list[tuple[int, str | None]]:
    return [(int(o.code), o.text) for o in msg.options if isinstance(o, dns.edns.EDEOption)]


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in msg.answer for rd in rrset if hasattr(rd, "address"))


# ---------------------------------------------------------------------------------------------
# Fake upstream


Answer = Callable[[dns.message.Message], dns.message.Message | list[bytes] | None]


@dataclass
class FakeUpstream:
    """A loopback DNS server. `zone` maps (name, type) -> list of rrset texts; unknown names get
    NXDOMAIN with an SOA. `delay` postpones answers; `drop` ignores queries; `handler` overrides
    everything (return None to stay silent)."""

    zone: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    rcode: int | None = None
    handler: Answer | None = None
    negative_ttl: int = 300
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (transport, name, type)
    port: int = 0
    truncate_over: int = 0  # UDP answers longer than this are sent with TC=1
    _transport: Any = None
    _server: Any = None
    _tasks: set = field(default_factory=set)

    def add(self, name: str, rdtype: str, *rdatas: str, ttl: int = 300) -> None:
        self.zone[(name.lower().rstrip(".") + ".", rdtype)] = [
            f"{ttl} IN {rdtype} {r}" for r in rdatas
        ]

    def answer(self, q: dns.message.Message) -> dns.message.Message | None:
        if self.handler is not None:
            return self.handler(q)
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.RA
        if self.rcode is not None:
            resp.set_rcode(self.rcode)
            return resp
        qn = q.question[0]
        name = qn.name
        rdtype = dns.rdatatype.to_text(qn.rdtype)
        found_any = False
        for _ in range(8):  # follow CNAMEs inside our zone
            key = (name.to_text().lower(), rdtype)
            cname = self.zone.get((name.to_text().lower(), "CNAME"))
            if key in self.zone:
                for line in self.zone[key]:
                    ttl, _, typ, rdata = line.split(" ", 3)
                    resp.answer.append(dns.rrset.from_text(name, int(ttl), "IN", typ, rdata))
                return resp
            if cname and rdtype != "CNAME":
                ttl, _, typ, rdata = cname[0].split(" ", 3)
                resp.answer.append(dns.rrset.from_text(name, int(ttl), "IN", "CNAME", rdata))
                name = dns.name.from_text(rdata)
                found_any = True
                continue
            if any(k[0] == name.to_text().lower() for k in self.zone):
                found_any = True
            break
        if not found_any:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        soa_owner = dns.name.from_text("example.")
        resp.authority.append(
            dns.rrset.from_text(
                soa_owner,
                self.negative_ttl,
                "IN",
                "SOA",
                f"ns.example. host.example. 1 3600 600 86400 {self.negative_ttl}",
            )
        )
        return resp

    async def _reply(self, data: bytes, send: Callable[[bytes], None], tcp: bool) -> None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return
        qn = q.question[0]
        self.seen.append(
            ("tcp" if tcp else "udp", qn.name.to_text(), dns.rdatatype.to_text(qn.rdtype))
        )
        if self.drop:
            return
        if self.delay:
            await asyncio.sleep(self.delay)
        resp = self.answer(q)
        if resp is None:
            return
        if isinstance(resp, list):  # raw datagrams, sent in order (spoofing tests)
            for w in resp:
                send(w)
            return
        wire = resp.to_wire(max_size=65535)
        if not tcp and self.truncate_over and len(wire) > self.truncate_over:
            short = dns.message.make_response(q)
            short.flags |= dns.flags.TC
            wire = short.to_wire()
        send(wire)

    async def start(self) -> FakeUpstream:
        loop = asyncio.get_running_loop()
        outer = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                t = loop.create_task(
                    outer._reply(data, lambda w: self.transport.sendto(w, addr), False)
                )
                outer._tasks.add(t)
                t.add_done_callback(outer._tasks.discard)

        for _ in range(20):
            transport, _ = await loop.create_datagram_endpoint(
                Udp, local_addr=("127.0.0.1", self.port)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._server = await asyncio.start_server(self._tcp, "127.0.0.1", port)
            except OSError:
                transport.close()
                continue
            self._transport, self.port = transport, port
            return self
        raise RuntimeError("no free port for the fake upstream")

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(length)

                def send(w: bytes) -> None:
                    writer.write(struct.pack("!H", len(w)) + w)

                await self._reply(data, send, True)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()

    def count(self, name: str) -> int:
        name = name.lower().rstrip(".") + "."
        return sum(1 for _, n, _ in self.seen if n.lower() == name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# A server on its own thread and event loop, for blocking clients (fuzzing, load, list swaps)


class EchoUpstream(asyncio.DatagramProtocol):
    """The cheapest upstream: NXDOMAIN without SOA (never cached) for any query, from its bytes."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) < 12:
            return
        pos = 12
        while pos < len(data) and 0 < data[pos] < 64:
            pos += 1 + data[pos]
        end = pos + 5
        if end > len(data):
            return
        flags = 0x8000 | 0x0080 | (int.from_bytes(data[2:4], "big") & 0x0110) | 3
        self.transport.sendto(
            data[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + data[12:end], addr
        )


class ThreadedServer:
    """Runs `ResolverService(config)` (plus optional upstream setup) on a background loop."""

    def __init__(self, make_config: Callable[[int], ResolverConfig], echo_upstream: bool = True):
        self.make_config = make_config
        self.echo_upstream = echo_upstream
        self.loop: asyncio.AbstractEventLoop | None = None
        self.service: ResolverService | None = None
        self.errors: list[dict] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._failure: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        loop.set_exception_handler(lambda _loop, ctx: self.errors.append(ctx))
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the test thread
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.service.stop())
        if self._echo is not None:
            self._echo.close()
        loop.close()

    async def _start(self) -> None:
        self._echo = None
        port = 0
        if self.echo_upstream:
            loop = asyncio.get_running_loop()
            self._echo, _ = await loop.create_datagram_endpoint(
                EchoUpstream, local_addr=("127.0.0.1", 0)
            )
            port = self._echo.get_extra_info("sockname")[1]
        self.service = ResolverService(self.make_config(port))
        await self.service.start()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(60)
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    @property
    def port(self) -> int:
        assert self.service is not None
        return self.service.port

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop and return its result (for reading stats safely)."""
        assert self.loop is not None
        done = threading.Event()
        box: list[Any] = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        done.wait(10)
        return box[0]


def udp_exchange(port: int, wire: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.send(wire)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None
