"""The URL proxy, end to end on loopback: `urlproxy serve` as a real process, curl as the client,
an origin with a listed path and allowed paths on the same host, the stop page, and the resolver
that diverts the host while the proxy is healthy.

Placeholder names only (`shared-host.example`, `blocked-demo.test`); every address is loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import ssl

import pytest
from resolver_fixtures import (
    ROOT_PUB,
    addresses,
    ask,
    make_config,
    running,
)
from test_stoppage_support import make_config as stoppage_config
from test_stoppage_support import running as stoppage_running
from urlproxy_fixtures import (
    BIG,
    LISTED_PATH,
    ORIGIN_IP,
    PROXY_IP,
    SHARED,
    Origin,
    Stack,
    curl,
    make_certificate,
    origin_upstream,
    proxy_config,
    proxy_process,
    write_proxy_list,
)

pytestmark = pytest.mark.tools("curl")

HOSTILE_IP = "127.0.0.5"


@contextlib.asynccontextmanager
async def stack(tmp_path, **overrides):
    write_proxy_list(tmp_path / "sync-state")
    cert, key, fingerprint = make_certificate(tmp_path)
    origin = await Origin(tmp_path).start(cert, key)
    upstream = origin_upstream()
    for label in ("huge", "slow", "down"):
        upstream.add(f"{label}.{SHARED}", "A", HOSTILE_IP if label != "down" else "127.0.0.9")
    upstream.add("other.example", "A", ORIGIN_IP)
    await upstream.start()
    stop_config = stoppage_config(tmp_path, ROOT_PUB)
    try:
        async with stoppage_running(stop_config) as stop_page:
            config = proxy_config(tmp_path, upstream.port, origin, stop_page.port, **overrides)
            async with proxy_process(config) as proxy:
                yield Stack(origin, upstream, proxy, stop_page, cert, fingerprint, tmp_path)
    finally:
        await upstream.stop()
        await origin.stop()


def via(s: Stack, path: str, host: str = SHARED, scheme: str = "http") -> list[str]:
    """curl arguments reaching `host` at the proxy, as a resolver answer would send it."""
    port = s.proxy.http_port if scheme == "http" else s.proxy.https_port
    return ["--resolve", f"{host}:{port}:{PROXY_IP}", f"{scheme}://{host}:{port}{path}"]


async def get(s: Stack, path: str, *extra: str, host: str = SHARED) -> tuple[int, bytes]:
    rc, out, err = await curl("--path-as-is", "-w", "\n%{http_code}", *extra, *via(s, path, host))
    assert rc == 0, err
    body, _, code = out.rpartition(b"\n")
    return int(code), body


async def test_listed_url_gets_the_stop_page_other_paths_the_origin(tmp_path):
    async with stack(tmp_path) as s:
        status, body = await get(s, LISTED_PATH + "photo.jpg", "-H", "Accept-Language: en")
        assert status == 451
        assert b"Test Authority" in body and b"/complaint?path=" in body
        assert s.origin.seen == []  # the listed request never reached the origin

        status, body = await get(
            s,
            "/album/41/?q=%41b&x",
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: secret",
            "-H",
            "X-Kept: 1",
        )
        assert status == 200
        seen = json.loads(body)
        assert seen["raw_path"] == "/album/41/?q=%41b&x"  # exactly as sent
        assert seen["host"] == f"{SHARED}:{s.proxy.http_port}"
        headers = {k.lower() for k in seen["headers"]}
        assert "x-kept" in headers and "x-hop" not in headers
        assert not headers & {"via", "x-forwarded-for", "forwarded", "cookie"}

        # The complaint form the notice links to is the stop page's, on the blocked host.
        status, body = await get(s, f"/complaint?path={LISTED_PATH.replace('/', '%2F')}")
        assert status == 200 and b'name="token"' in body
        status, body = await get(s, "/complaint/status?lang=en")
        assert status == 200 and b'name="ticket"' in body
        status, body = await get(s, "/complaint")  # no listed path: the origin's own page
        assert status == 200 and json.loads(body)["raw_path"] == "/complaint"

        # Nothing about visitors in the proxy's log.
        log = s.proxy.log()
        assert "album" not in log and SHARED not in log and "curl" not in log


@pytest.mark.parametrize(
    "path",
    [
        "/album/42/",
        "/album/%34%32/",  # escaped
        "/album/%2534%2532/",  # escaped twice
        "/album/x/../42/",  # dot segments
        "/album/./42/",
        "//album//42/",  # repeated slashes
        "/album/42/?page=2",  # query
        "/album/42/deeper/photo.jpg",  # below the listed prefix
    ],
)
async def test_canonicalization_tricks_are_still_blocked(tmp_path, path):
    async with stack(tmp_path) as s:
        status, _ = await get(s, path)
        assert status == 451, path
        for host in (SHARED.upper(), f"www.{SHARED}"):  # case, subdomain
            status, _ = await get(s, path, host=host)
            assert status == 451, (host, path)
        assert s.origin.seen == []


async def test_bodies_pass_unchanged_both_ways(tmp_path):
    async with stack(tmp_path) as s:
        want = hashlib.sha256(BIG).hexdigest()
        for path in ("/big.bin", "/chunked.bin"):
            rc, out, err = await curl(*via(s, path))
            assert rc == 0, err
            assert hashlib.sha256(out).hexdigest() == want, path

        upload = s.tmp_path / "upload.bin"
        upload.write_bytes(BIG)
        for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
            rc, out, err = await curl("--data-binary", f"@{upload}", *extra, *via(s, "/upload"))
            assert rc == 0, err
            assert json.loads(out) == {"sha256": want, "size": len(BIG)}

        # Keep-alive: two requests on one connection to the proxy.
        port = s.proxy.http_port
        rc, _, err = await curl(
            "-v",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--resolve",
            f"{SHARED}:{port}:{PROXY_IP}",
            f"http://{SHARED}:{port}/a",
            f"http://{SHARED}:{port}/b",
        )
        assert rc == 0, err
        assert re.search(r"Re-?using existing connection", err), err


async def test_websocket_upgrade_is_refused(tmp_path):
    async with stack(tmp_path) as s:
        status, _ = await get(
            s,
            "/chat",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        )
        assert status == 501
        assert s.origin.seen == []


async def test_https_passes_through_with_the_origins_certificate(tmp_path):
    async with stack(tmp_path) as s:
        rc, out, err = await curl("--cacert", str(s.cert), *via(s, "/tls/path", scheme="https"))
        assert rc == 0, err
        assert json.loads(out)["raw_path"] == "/tls/path"
        # The listed path too: it cannot be seen inside TLS, so the origin answers it.
        rc, out, err = await curl("--cacert", str(s.cert), *via(s, LISTED_PATH, scheme="https"))
        assert rc == 0 and json.loads(out)["raw_path"] == LISTED_PATH, err

        # The certificate the client sees is the origin's own, byte for byte.
        ctx = ssl.create_default_context(cafile=str(s.cert))
        _, writer = await asyncio.open_connection(
            PROXY_IP, s.proxy.https_port, ssl=ctx, server_hostname=SHARED
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert hashlib.sha256(der).hexdigest() == s.fingerprint
        writer.close()

        # A name that carries no URL entry, or no name at all: closed, never spliced.
        for name in ("other.example", None):
            ctx = ssl.create_default_context(cafile=str(s.cert))
            ctx.check_hostname = False
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                _, w = await asyncio.open_connection(
                    PROXY_IP, s.proxy.https_port, ssl=ctx, server_hostname=name
                )
                w.close()


async def test_origin_down_and_foreign_hosts(tmp_path):
    async with stack(tmp_path) as s:
        status, body = await get(s, "/x", host=f"down.{SHARED}")
        assert status == 502
        assert b"did not answer" in body and SHARED.encode() not in body
        status, _ = await get(s, "/x", host="other.example")  # not an open proxy
        assert status == 421
        reader, writer = await asyncio.open_connection(PROXY_IP, s.proxy.http_port)
        writer.write(f"GET http://{SHARED}/x HTTP/1.1\r\nHost: {SHARED}\r\n\r\n".encode())
        assert (await reader.readline()).startswith(b"HTTP/1.1 400 ")  # nor a forward proxy
        writer.close()
        assert s.origin.seen == []


class Hostile:
    """An origin that misbehaves by name: `huge` answers 1 MB of headers, `slow` never answers,
    on the origin's port at its own loopback address."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"huge." in head:
                writer.write(b"HTTP/1.1 200 OK\r\n")
                for i in range(20000):
                    writer.write(b"X-Junk-%d: %s\r\n" % (i, b"y" * 40))
                writer.write(b"\r\n")
                await writer.drain()
            await reader.read()  # slow: say nothing until the proxy gives up
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()

    async def start(self, port: int) -> Hostile:
        self.server = await asyncio.start_server(self.handle, HOSTILE_IP, port)
        return self


async def test_a_hostile_origin_cannot_exhaust_the_proxy(tmp_path):
    async with stack(tmp_path) as s:
        hostile = await Hostile().start(s.origin.http_port)
        try:
            status, _ = await get(s, "/", host=f"huge.{SHARED}")
            assert status == 502
            hostile.closed.clear()
            status, body = await get(s, "/", host=f"slow.{SHARED}")  # read_timeout = 2 s
            assert status == 504 and SHARED.encode() not in body
            await asyncio.wait_for(hostile.closed.wait(), 10)
        finally:
            assert hostile.server is not None
            hostile.server.close()

        # An endless body: the client leaves after 1 MB and the proxy drops the origin too.
        reader, writer = await asyncio.open_connection(PROXY_IP, s.proxy.http_port)
        writer.write(f"GET /endless HTTP/1.1\r\nHost: {SHARED}\r\n\r\n".encode())
        got = 0
        while got < 1 << 20:
            chunk = await reader.read(65536)
            assert chunk
            got += len(chunk)
        writer.transport.abort()
        await asyncio.wait_for(s.origin.connections_closed.wait(), 10)

        # Still serving.
        status, _ = await get(s, "/after")
        assert status == 200


async def test_resolver_stops_diverting_when_the_proxy_dies(tmp_path):
    async with stack(tmp_path) as s:
        config = make_config(
            tmp_path / "sync-state",
            [s.upstream.port],
            url_proxy={
                "ipv4": PROXY_IP,
                "health_url": s.proxy.health_url,
                "health_interval": 0.1,
                "health_timeout": 0.5,
            },
        )
        async with running(config) as resolver:

            async def diverting(active: bool) -> None:
                while (resolver.resolver.lists.divert is not None) != active:
                    resolver.divert_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(resolver.divert_changed.wait(), 0.5)

            await asyncio.wait_for(diverting(True), 10)
            msg = await ask(resolver.port, SHARED, "A")
            assert addresses(msg) == [PROXY_IP]
            # curl to the address the resolver gave: the listed path is blocked, others pass.
            port = s.proxy.http_port
            target = addresses(msg)[0]
            for path, want in ((LISTED_PATH, 451), ("/open/", 200)):
                rc, out, err = await curl(
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--resolve",
                    f"{SHARED}:{port}:{target}",
                    f"http://{SHARED}:{port}{path}",
                )
                assert rc == 0 and int(out) == want, (path, err)

            s.proxy.kill()  # SIGKILL: no goodbye
            await asyncio.wait_for(diverting(False), 10)
            msg = await ask(resolver.port, SHARED, "A")
            assert addresses(msg) == [ORIGIN_IP]


def test_sni_parser_reads_real_client_hellos():
    from urlproxy.sni import NEED_MORE, NotRoutable, client_hello_name

    for name in (SHARED, "xn--bcher-kva.example"):
        ctx = ssl.create_default_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outgoing.read()
        assert client_hello_name(hello) == name
        assert client_hello_name(hello[:40]) == NEED_MORE
    for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"):
        with pytest.raises(NotRoutable):
            client_hello_name(junk)


async def test_private_origins_are_refused_unless_allowed(tmp_path):
    # A list entry on a host that resolves into the ASP's network must not open a way there.
    async with stack(tmp_path, origin={"allow_private_addresses": False}) as s:
        status, body = await get(s, "/x")
        assert status == 502 and b"did not answer" in body
        rc, _, _ = await curl("--cacert", str(s.cert), *via(s, "/x", scheme="https"))
        assert rc != 0  # the TLS splice refuses it too
        assert s.origin.seen == []


async def test_malformed_requests_leave_no_visitor_trace_in_the_log(tmp_path):
    async with stack(tmp_path) as s:
        visitor = "127.0.0.7"
        for request in (
            b"GARBAGE\r\n\r\n",
            b"GET /album/41/ HTTP/1.1\r\nHost: "
            + SHARED.encode()
            + b"\r\nX-Big: "
            + b"z" * 20000
            + b"\r\n\r\n",
            b"GET /" + b"p" * 20000 + b" HTTP/1.1\r\nHost: " + SHARED.encode() + b"\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(
                PROXY_IP, s.proxy.http_port, local_addr=(visitor, 0)
            )
            writer.write(request)
            status_line = await reader.readline()
            assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), status_line
            writer.close()
        status, _ = await get(s, "/after")  # the proxy is still serving
        assert status == 200
        log = s.proxy.log()
        assert visitor not in log and "zzzz" not in log and "pppp" not in log and SHARED not in log


@pytest.mark.tools("chromium")
async def test_chromium_through_the_proxy(tmp_path):
    """A real browser sent to the proxy, as the resolver's answer would send it: the listed URL
    shows the stop page's notice, another path of the same host the origin's bytes."""
    import tools

    async with stack(tmp_path) as s:
        rules = f"MAP {SHARED} {PROXY_IP}:{s.proxy.http_port}"

        async def dump(path: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                tools.path("chromium"),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--lang=en",
                f"--user-data-dir={tmp_path / 'chromium'}",
                f"--host-resolver-rules={rules}",
                "--dump-dom",
                f"http://{SHARED}{path}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 0
            return out.decode()

        notice = await dump(LISTED_PATH)
        assert "Test Authority" in notice and "/complaint?path=" in notice
        page = await dump("/album/7/?from=chromium")
        assert '"raw_path": "/album/7/?from=chromium"' in page
        assert [r["raw_path"] for r in s.origin.seen if "chromium" in r["raw_path"]]


async def test_slow_clients_cannot_hold_the_proxy(tmp_path):
    server = {"keepalive_timeout": 1.0, "body_idle_timeout": 1.0, "tls_idle_timeout": 1.0}
    async with stack(tmp_path, server=server) as s:
        # A TLS connection that goes quiet after the handshake: the splice is ended.
        ctx = ssl.create_default_context(cafile=str(s.cert))
        reader, writer = await asyncio.open_connection(
            PROXY_IP, s.proxy.https_port, ssl=ctx, server_hostname=SHARED
        )
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            assert await asyncio.wait_for(reader.read(), 20) == b""
        writer.close()
        # Headers dribbled and never finished: closed after keepalive_timeout.
        reader, writer = await asyncio.open_connection(PROXY_IP, s.proxy.http_port)
        writer.write(f"GET /x HTTP/1.1\r\nHost: {SHARED}\r\nX-Slow: ".encode())
        assert await asyncio.wait_for(reader.read(), 20) == b""
        writer.close()
        # A body that stops half-way: the proxy gives up on it and on the origin request.
        reader, writer = await asyncio.open_connection(PROXY_IP, s.proxy.http_port)
        writer.write(
            f"POST /upload HTTP/1.1\r\nHost: {SHARED}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b"a" * 10
        )
        await asyncio.wait_for(reader.read(), 20)  # whatever it says, it closes
        writer.close()
        status, _ = await get(s, "/after")
        assert status == 200


def test_check_names_a_bad_key_and_shows_the_list(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text('[sync]\nroot_keys = []\n\n[server]\nhttp_port = "eighty"\n')
    out = subprocess.run(
        [sys.executable, "-m", "urlproxy", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"{bad}: server.http_port" in out.stderr and f"{bad}: origin: Field required" in (
        out.stderr
    ), out.stderr

    write_proxy_list(tmp_path / "sync-state")
    good = tmp_path / "good.toml"
    good.write_text(
        f'[sync]\nroot_keys = ["{ROOT_PUB}"]\nstate_dir = "sync-state"\n'
        '\n[origin]\nresolvers = ["127.0.0.1:53"]\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "urlproxy", "check", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "verified list: serial 1, 1 hosts carrying URL entries" in out.stdout
