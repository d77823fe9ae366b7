"""Liveness checks against a local DNS responder and local HTTP(S) servers, all on 127.0.0.1.

The DNS responder maps `*.test` names to 127.0.0.1 (with named exceptions for NXDOMAIN, NODATA,
SERVFAIL, REFUSED and silence). One HTTP server plays every behaviour, chosen by request path; a
second one stands for "another host" that must never be contacted. The servers record what they
receive, so the tests check what the checker sends and when it hangs up, from the server side.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import dnslib
import pytest
from tls_fixtures import self_signed

from blocklist.authority.liveness import CheckResult, LivenessSettings, check_entry, check_many
from blocklist.state import Kind

LOOPBACK = "127.0.0.1"
SPECIAL_NAMES = {
    "nx.test": dnslib.RCODE.NXDOMAIN,
    "servfail.test": dnslib.RCODE.SERVFAIL,
    "refused.test": dnslib.RCODE.REFUSED,
}
SILENT_NAME = "silent.test"
NODATA_NAME = "nodata.test"
# 127.0.0.2 is loopback too, but nothing listens there: connecting is refused.
A_RECORDS = {"multi.test": ["127.0.0.2", LOOPBACK]}
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
STREAM_CHUNK = 4096
STREAM_CAP = 64 * 1024 * 1024  # the endless body stops here at the latest, to bound the test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# --- DNS ---------------------------------------------------------------------------------------


class DnsResponder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = dnslib.DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        qtype = dnslib.QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        if name == SILENT_NAME:
            return
        reply = request.reply()
        if name in SPECIAL_NAMES:
            reply.header.rcode = SPECIAL_NAMES[name]
        elif name != NODATA_NAME and qtype == "A":
            for address in A_RECORDS.get(name, [LOOPBACK]):
                reply.add_answer(dnslib.RR(name, dnslib.QTYPE.A, rdata=dnslib.A(address), ttl=60))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[DnsResponder, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        DnsResponder, local_addr=(LOOPBACK, 0)
    )
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


# --- HTTP --------------------------------------------------------------------------------------


@dataclass
class Request:
    line: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


Writer = asyncio.StreamWriter


@dataclass
class WebServer:
    ssl_context: ssl.SSLContext | None = None
    other_port: int = 0  # where /redirect points
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    stream_sent: int | None = None  # body bytes written before the checker hung up
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            line, *rest = head.decode("latin-1").split("\r\n")
            request = Request(line, [(k, v) for k, _, v in (h.partition(": ") for h in rest if h)])
            self.requests.append(request)
            path = line.split(" ")[1]
            await self._respond(path, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.active -= 1
            writer.close()
            self._tasks.discard(task)

    async def _respond(self, path: str, writer: Writer) -> None:
        route = path.split("?")[0].strip("/").split("/")
        behaviours: dict[str, Callable[[], Awaitable[None]]] = {
            "": lambda: self._send(writer, "HTTP/1.1 200 OK", body=b"content"),
            "status": lambda: self._send(writer, f"HTTP/1.1 {route[-1]} Whatever", body=b"x"),
            "redirect": lambda: self._send(
                writer,
                "HTTP/1.1 302 Found",
                f"Location: http://elsewhere.test:{self.other_port}/landing?from=1",
            ),
            "slow": lambda: self._slow(writer),
            "hold": lambda: self._hold(writer),
            "stream": lambda: self._stream(writer),
            "cookie": lambda: self._send(writer, "HTTP/1.1 200 OK", "Set-Cookie: session=s3cr3t"),
            "many-headers": lambda: self._send(
                writer, "HTTP/1.1 200 OK", *(f"X-Pad-{i}: {'a' * 100}" for i in range(200))
            ),
            "long-header": lambda: self._send(writer, "HTTP/1.1 200 OK", "X-Pad: " + "a" * 20000),
            "malformed": lambda: self._raw(writer, b"HTTP/1.1 OK\r\n\r\n"),
            "not-http": lambda: self._raw(writer, b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            "bare-lf": lambda: self._raw(writer, b"HTTP/1.1 410 Gone\nServer: x\n\nbody"),
            "early-hints": lambda: self._raw(
                writer,
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                b"HTTP/1.1 451 Unavailable For Legal Reasons\r\n\r\n",
            ),
            "truncated": lambda: self._raw(writer, b"HTTP/1.1 200 OK\r\nServer: x\r\n"),
        }
        await behaviours[route[0]]()

    async def _raw(self, writer: Writer, data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def _send(self, writer: Writer, status: str, *headers: str, body: bytes = b"") -> None:
        head = "\r\n".join([status, f"Content-Length: {len(body)}", *headers]) + "\r\n\r\n"
        await self._raw(writer, head.encode("latin-1") + body)

    async def _slow(self, writer: Writer) -> None:
        await asyncio.sleep(3)
        await self._send(writer, "HTTP/1.1 200 OK")

    async def _hold(self, writer: Writer) -> None:
        await asyncio.sleep(0.2)
        await self._send(writer, "HTTP/1.1 200 OK")

    async def _stream(self, writer: Writer) -> None:
        await self._raw(writer, STREAM_HEAD)  # no length, no chunking: the body never ends
        sent = 0
        try:
            while sent < STREAM_CAP:
                writer.write(b"\0" * STREAM_CHUNK)
                await writer.drain()
                sent += STREAM_CHUNK
                # Paced, so that kernel buffers cannot soak up megabytes before the hang-up.
                await asyncio.sleep(0.001)
        except OSError:
            self.stream_sent = sent
            self.stream_closed.set()
            raise


@dataclass
class World:
    dns: DnsResponder
    web: WebServer
    other: WebServer  # "another host": must never see a request
    tls: WebServer
    sni: list[str | None]
    settings: LivenessSettings  # https on a closed port, http on `web`


@pytest.fixture
async def world(dns_server: tuple[DnsResponder, int], tmp_path: Path) -> AsyncIterator[World]:
    dns, dns_port = dns_server
    other = WebServer()
    await other.start()
    web = WebServer(other_port=other.port)
    await web.start()

    sni: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path, "secure.test")[:2])

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sni.append(name)

    context.sni_callback = record_sni
    tls = WebServer(ssl_context=context, other_port=other.port)
    await tls.start()

    settings = LivenessSettings(
        resolver_host=LOOPBACK,
        resolver_port=dns_port,
        timeout=2.0,
        http_port=web.port,
        https_port=free_port(),  # nothing listens: https is refused, http answers
        allow_private_addresses=True,  # the test servers live on loopback
    )
    try:
        yield World(dns, web, other, tls, sni, settings)
    finally:
        for server in (web, other, tls):
            await server.stop()


async def check(world: World, kind: Kind, value: str, **changes: object) -> CheckResult:
    settings = replace(world.settings, **changes)
    # A hang guard only: a correct checker is bounded by its own timeouts.
    return await asyncio.wait_for(check_entry(kind, value, settings), 20)


# --- DNS outcomes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "outcome", "detail"),
    [
        ("nx.test", "gone", "NXDOMAIN"),
        (NODATA_NAME, "gone", "no address"),
        ("servfail.test", "unknown", "DNS SERVFAIL"),
        ("refused.test", "unknown", "DNS REFUSED"),
    ],
)
async def test_dns_answers_decide_before_any_connection(
    world: World, name: str, outcome: str, detail: str
) -> None:
    result = await check(world, Kind.DOMAIN, name)
    assert (result.outcome, result.detail) == (outcome, detail)
    assert (result.http_status, result.address, result.scheme) == (None, None, None)
    assert world.web.requests == []


async def test_nodata_asks_a_then_aaaa(world: World) -> None:
    await check(world, Kind.DOMAIN, NODATA_NAME)
    assert world.dns.queries == [(NODATA_NAME, "A"), (NODATA_NAME, "AAAA")]


async def test_silent_resolver_is_unknown(world: World) -> None:
    result = await check(world, Kind.DOMAIN, SILENT_NAME, timeout=0.5)
    assert (result.outcome, result.detail) == ("unknown", "DNS timeout")
    assert world.web.requests == []


async def test_dead_resolver_is_unknown(world: World) -> None:
    result = await check(world, Kind.DOMAIN, "online.test", resolver_port=free_port(), timeout=0.5)
    assert result.outcome == "unknown"
    assert result.detail.startswith("DNS")
    assert world.web.requests == []


async def test_ip_literal_needs_no_dns(world: World) -> None:
    result = await check(world, Kind.URL, f"{LOOPBACK}/status/404?x=1")
    assert (result.outcome, result.detail, result.address) == ("gone", "HTTP 404", LOOPBACK)
    assert world.dns.queries == []
    assert world.web.requests[0].header("Host") == f"{LOOPBACK}:{world.web.port}"


# --- HTTP outcomes -----------------------------------------------------------------------------


async def test_online_domain(world: World) -> None:
    result = await check(world, Kind.DOMAIN, "online.test")
    assert result.outcome == "online"
    assert result.detail == "HTTP 200"
    assert result.http_status == 200
    assert result.redirect is None
    assert result.address == LOOPBACK
    assert result.scheme == "http"  # https was refused, so http decided
    assert result.elapsed_ms >= 0
    assert [r.line for r in world.web.requests] == ["GET / HTTP/1.1"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "online"),
        (204, "online"),
        (401, "online"),
        (403, "online"),
        (400, "online"),
        (429, "online"),
        (404, "gone"),
        (410, "gone"),
        (451, "gone"),
        (500, "unknown"),
        (503, "unknown"),
    ],
)
async def test_status_decides(world: World, status: int, outcome: str) -> None:
    result = await check(world, Kind.URL, f"shared.test/status/{status}")
    assert (result.outcome, result.detail, result.http_status) == (
        outcome,
        f"HTTP {status}",
        status,
    )


async def test_url_entry_sends_its_path_and_query(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/status/410?id=3&x=%20y")
    assert result.outcome == "gone"
    assert world.web.requests[0].line == "GET /status/410?id=3&x=%20y HTTP/1.1"
    assert world.web.requests[0].header("Host") == f"shared.test:{world.web.port}"


async def test_redirect_is_recorded_not_followed(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/redirect/7")
    assert result.outcome == "online"
    assert result.http_status == 302
    assert result.redirect == f"http://elsewhere.test:{world.other.port}/landing?from=1"
    assert world.other.requests == []
    assert len(world.web.requests) == 1
    assert [q for q, _ in world.dns.queries] == ["shared.test", "shared.test"]


async def test_first_address_that_connects_is_used(world: World) -> None:
    result = await check(world, Kind.DOMAIN, "multi.test")
    assert (result.outcome, result.address) == ("online", LOOPBACK)


async def test_refused_everywhere_is_gone(world: World) -> None:
    result = await check(world, Kind.DOMAIN, "multi.test", http_port=free_port())
    assert (result.outcome, result.detail) == ("gone", "connection refused")
    assert (result.http_status, result.address, result.scheme) == (None, None, None)


async def test_slow_headers_are_unknown(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/slow", timeout=0.5)
    assert (result.outcome, result.detail) == ("unknown", "header timeout")
    assert result.address == LOOPBACK
    assert result.http_status is None


@pytest.mark.parametrize("path", ["many-headers", "long-header"])
async def test_oversized_headers_are_unknown(world: World, path: str) -> None:
    result = await check(world, Kind.URL, f"shared.test/{path}")
    assert (result.outcome, result.detail) == ("unknown", "headers too large")


async def test_headers_within_a_raised_limit_are_read(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/many-headers", max_header_bytes=65536)
    assert result.outcome == "online"


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("malformed", "malformed status line"),
        ("not-http", "malformed status line"),
        ("truncated", "connection closed before headers"),
    ],
)
async def test_broken_responses_are_unknown(world: World, path: str, detail: str) -> None:
    result = await check(world, Kind.URL, f"shared.test/{path}")
    assert (result.outcome, result.detail, result.http_status) == ("unknown", detail, None)


async def test_bare_lf_line_endings_are_understood(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/bare-lf")
    assert (result.outcome, result.http_status) == ("gone", 410)


async def test_interim_responses_are_skipped(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/early-hints")
    assert (result.outcome, result.http_status) == ("gone", 451)


async def test_endless_body_is_never_read(world: World) -> None:
    result = await check(world, Kind.URL, "shared.test/stream")
    assert (result.outcome, result.http_status) == ("online", 200)
    # The server sees the connection die soon after the headers, not after megabytes.
    await asyncio.wait_for(world.web.stream_closed.wait(), 10)
    assert world.web.stream_sent is not None
    assert world.web.stream_sent < 1024 * 1024


# --- What is sent ------------------------------------------------------------------------------


async def test_request_has_exactly_the_expected_headers(world: World) -> None:
    await check(world, Kind.DOMAIN, "online.test", user_agent="Probe/9 (+https://a.example/)")
    request = world.web.requests[0]
    assert request.headers == [
        ("Host", f"online.test:{world.web.port}"),
        ("User-Agent", "Probe/9 (+https://a.example/)"),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]


async def test_cookies_are_never_sent_back(world: World) -> None:
    for _ in range(2):
        result = await check(world, Kind.URL, "shared.test/cookie")
        assert result.outcome == "online"
    assert len(world.web.requests) == 2
    assert all(r.header("Cookie") is None for r in world.web.requests)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (Kind.URL, "shared.test/a\r\nCookie: x=1"),
        (Kind.URL, "shared.test/a b"),
        (Kind.DOMAIN, "bad host.test"),
        (Kind.DOMAIN, ""),
        (Kind.DOMAIN, "-.test/"),
        (Kind.URL, "[not-ipv6]/a"),
        (Kind.URL, "shäred.test/a"),
    ],
)
async def test_unsafe_values_are_refused_before_any_io(
    world: World, kind: Kind, value: str
) -> None:
    result = await check(world, kind, value)
    assert (result.outcome, result.detail) == ("unknown", "invalid entry value")
    assert world.dns.queries == []
    assert world.web.requests == []


# --- HTTPS -------------------------------------------------------------------------------------


async def test_https_with_self_signed_certificate(world: World) -> None:
    result = await check(world, Kind.URL, "secure.test/status/404", https_port=world.tls.port)
    assert (result.outcome, result.scheme, result.http_status) == ("gone", "https", 404)
    assert world.sni == ["secure.test"]
    assert world.web.requests == []  # https connected, so http was never tried
    assert world.tls.requests[0].header("Host") == f"secure.test:{world.tls.port}"


async def test_https_redirect_not_followed(world: World) -> None:
    result = await check(world, Kind.URL, "secure.test/redirect", https_port=world.tls.port)
    assert (result.outcome, result.scheme, result.http_status) == ("online", "https", 302)
    assert result.redirect is not None
    assert world.other.requests == []


async def test_https_endless_body_is_never_read(world: World) -> None:
    result = await check(world, Kind.URL, "secure.test/stream", https_port=world.tls.port)
    assert (result.outcome, result.scheme) == ("online", "https")
    await asyncio.wait_for(world.tls.stream_closed.wait(), 10)
    assert world.tls.stream_sent is not None
    assert world.tls.stream_sent < 1024 * 1024


async def test_tls_failure_falls_back_to_http(world: World) -> None:
    # A port that answers a TLS client in plain text: the handshake fails, http then answers.
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, LOOPBACK, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await check(world, Kind.DOMAIN, "online.test", https_port=port)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.outcome, result.scheme, result.http_status) == ("online", "http", 200)


async def test_tls_failure_everywhere_is_unknown(world: World) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"garbage\r\n\r\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, LOOPBACK, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await check(world, Kind.DOMAIN, "online.test", https_port=port, schemes=("https",))
    finally:
        server.close()
        await server.wait_closed()
    assert (result.outcome, result.detail) == ("unknown", "TLS handshake failed")


@pytest.mark.parametrize(
    "changes",
    [
        {"user_agent": "Probe/1\r\nCookie: a=b"},
        {"user_agent": ""},
        {"schemes": ()},
        {"schemes": ("ftp",)},
        {"timeout": 0},
        {"concurrency": 0},
        {"max_header_bytes": 10},
        {"http_port": 0},
        {"resolver_host": "resolver.example"},
    ],
)
def test_nonsense_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LivenessSettings(**changes)


async def test_private_addresses_are_not_contacted_by_default(world: World) -> None:
    result = await check(world, Kind.DOMAIN, "online.test", allow_private_addresses=False)
    assert (result.outcome, result.detail) == ("unknown", "only non-public addresses")
    assert world.web.requests == []


async def test_http_only(world: World) -> None:
    result = await check(world, Kind.DOMAIN, "online.test", schemes=("http",))
    assert (result.outcome, result.scheme) == ("online", "http")


# --- Many --------------------------------------------------------------------------------------


async def test_check_many_bounds_concurrency(world: World) -> None:
    targets = [(i, Kind.URL, f"shared{i}.test/hold/{i}") for i in range(10)]
    settings = replace(world.settings, concurrency=3)
    results = await asyncio.wait_for(check_many(targets, settings), 20)
    assert sorted(results) == list(range(10))
    assert all(r.outcome == "online" for r in results.values())
    assert len(world.web.requests) == 10
    assert world.web.max_active == 3


async def test_check_many_mixes_outcomes(world: World) -> None:
    targets = iter(
        [
            (1, Kind.DOMAIN, "online.test"),
            (2, Kind.DOMAIN, "nx.test"),
            (3, Kind.URL, "shared.test/status/410"),
            (4, Kind.URL, "shared.test/status/502"),
        ]
    )
    results = await check_many(targets, world.settings)
    assert {i: r.outcome for i, r in results.items()} == {
        1: "online",
        2: "gone",
        3: "gone",
        4: "unknown",
    }


async def test_check_many_of_nothing(world: World) -> None:
    assert await check_many([], world.settings) == {}


# --- Evidence against cloaking ----------------------------------------------------------------


class AnswersEverything(DnsResponder):
    """A second resolver that still knows every name (e.g. another network's view)."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = dnslib.DNSRecord.parse(data)
        reply = request.reply()
        if dnslib.QTYPE[request.q.qtype] == "A":
            reply.add_answer(
                dnslib.RR(request.q.qname, dnslib.QTYPE.A, rdata=dnslib.A(LOOPBACK), ttl=60)
            )
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def second_dns() -> AsyncIterator[tuple[int, int]]:
    """Ports of two more resolvers: one like the first, one that answers every name."""
    loop = asyncio.get_running_loop()
    same, _ = await loop.create_datagram_endpoint(DnsResponder, local_addr=(LOOPBACK, 0))
    every, _ = await loop.create_datagram_endpoint(AnswersEverything, local_addr=(LOOPBACK, 0))
    try:
        yield same.get_extra_info("sockname")[1], every.get_extra_info("sockname")[1]
    finally:
        same.close()
        every.close()


async def test_gone_from_every_resolver_is_strong(world: World, second_dns) -> None:
    same, every = second_dns
    one = await check(world, Kind.DOMAIN, "nx.test")
    assert (one.outcome, one.evidence, one.strong) == ("gone", "dns-one", False)
    two = await check(world, Kind.DOMAIN, "nx.test", extra_resolvers=((LOOPBACK, same),))
    assert (two.outcome, two.detail, two.evidence, two.strong) == (
        "gone",
        "NXDOMAIN",
        "dns",
        True,
    )
    # One resolver still knows the name: it lives, and the site is asked.
    split = await check(world, Kind.DOMAIN, "nx.test", extra_resolvers=((LOOPBACK, every),))
    assert split.outcome == "online" and world.web.requests
    # One says gone, the other cannot tell: unknown, never gone.
    muddled = await check(
        world,
        Kind.DOMAIN,
        "nx.test",
        extra_resolvers=((LOOPBACK, free_port()),),
        timeout=0.5,
    )
    assert muddled.outcome == "unknown" and "resolvers disagree" in muddled.detail


async def test_http_gone_is_weak_evidence(world: World) -> None:
    result = await check(world, Kind.URL, "online.test/status/410")
    assert (result.outcome, result.evidence, result.strong) == ("gone", "http", False)
    refused = await check(world, Kind.DOMAIN, "online.test", http_port=free_port())
    assert (refused.outcome, refused.evidence) == ("gone", "refused")


def test_default_user_agent_is_a_browsers() -> None:
    agent = LivenessSettings().user_agent
    assert agent.startswith("Mozilla/5.0") and "cordon" not in agent.lower()


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback whose outgoing connections come from 127.0.0.2."""

    def __init__(self) -> None:
        self.port = 0
        self.tunnels: list[str] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1].decode()
        self.tunnels.append(target)
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host.strip("[]"), int(port), local_addr=("127.0.0.2", 0)
            )
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: Writer) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_proxy_hides_the_checkers_address(world: World) -> None:
    """A site that cloaks by address: 404 to the authority's address (127.0.0.1), content to
    everyone else. Direct, the checker sees "gone"; through the egress proxy, "online"."""

    async def cloaking(reader: asyncio.StreamReader, writer: Writer) -> None:
        peer = writer.get_extra_info("peername")[0]
        await reader.readuntil(b"\r\n\r\n")
        status = "404 Not Found" if peer == LOOPBACK else "200 OK"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    site = await asyncio.start_server(cloaking, LOOPBACK, 0)
    proxy = ConnectProxy()
    await proxy.start()
    try:
        port = site.sockets[0].getsockname()[1]
        direct = await check(world, Kind.DOMAIN, "online.test", http_port=port)
        assert (direct.outcome, direct.evidence) == ("gone", "http")
        proxied = await check(
            world, Kind.DOMAIN, "online.test", http_port=port, proxy=f"{LOOPBACK}:{proxy.port}"
        )
        assert (proxied.outcome, proxied.detail) == ("online", "HTTP 200")
        # https first (its port is closed: the proxy's 502 is no verdict), then http.
        assert proxy.tunnels[-1] == f"{LOOPBACK}:{port}" and len(proxy.tunnels) == 2
        # What the proxy says about a closed port is not evidence about the content.
        closed = await check(
            world,
            Kind.DOMAIN,
            "online.test",
            http_port=free_port(),
            proxy=f"{LOOPBACK}:{proxy.port}",
        )
        assert closed.outcome == "unknown" and "proxy answered 502" in closed.detail
        dead_proxy = await check(
            world, Kind.DOMAIN, "online.test", http_port=port, proxy=f"{LOOPBACK}:{free_port()}"
        )
        assert dead_proxy.outcome == "unknown"
    finally:
        site.close()
        await site.wait_closed()
        await proxy.stop()
