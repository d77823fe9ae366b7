"""DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484) on `resolver serve`, and the
application DNS canary. Real clients: kdig (+tls, +https), curl (HTTP/2 and HTTP/1.1),
dnspython's DoH client (httpx), and raw TLS sockets for the bad inputs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
import pytest
import tools
from resolver_fixtures import (
    ROOT_PUB,
    STOP_V4,
    FakeUpstream,
    addresses,
    ask,
    ask_tcp,
    config_error,
    ede,
    make_config,
    query,
    running,
    write_list,
)
from test_resolver_reload import Log, until
from test_resolver_service import free_dns_port, get
from tls_fixtures import self_signed

from resolver.service import ResolverService

FINE = "fine.example"
FINE_ADDR = "198.51.100.7"
LISTED = "bad.example"
SERVER_NAME = "dns.isp.test"
REPO = Path(__file__).resolve().parent.parent


class World:
    def __init__(self, tmp_path: Path, up: FakeUpstream) -> None:
        self.tmp = tmp_path
        self.up = up
        self.cert, self.key, self.pin = self_signed(tmp_path, SERVER_NAME)

    def config(self, **sections):
        tls = {"certificate": str(self.cert), "private_key": str(self.key)}
        tls.update(sections.pop("tls", {}))
        dot = {"enabled": True, "port": 0} | sections.pop("dot", {})
        doh = {"enabled": True, "port": 0} | sections.pop("doh", {})
        return make_config(self.tmp, [self.up.port], tls=tls, dot=dot, doh=doh, **sections)


@pytest.fixture
async def world(tmp_path):
    up = await FakeUpstream().start()
    up.add(FINE, "A", FINE_ADDR)
    up.add("x.use-application-dns.net", "A", FINE_ADDR)
    up.add("use-application-dns.net", "A", FINE_ADDR)
    write_list(tmp_path, [LISTED])
    try:
        yield World(tmp_path, up)
    finally:
        await up.stop()


async def run(*args: str, timeout: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


async def kdig(world: World, port: int, name: str, *opts: str) -> tuple[int, str]:
    return await run(tools.path("kdig"), "-p", str(port), "@127.0.0.1", name, "A", *opts)


def trusted(world: World, *opts: str) -> list[str]:
    """kdig options that verify the server's certificate and name (out-of-band profile)."""
    return [f"+tls-ca={world.cert}", f"+tls-hostname={SERVER_NAME}", *opts]


def client_context(world: World, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(world.cert))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def tls_connect(port: int, ctx: ssl.SSLContext, sni: str | None = SERVER_NAME):
    if sni is None:
        ctx.check_hostname = False
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni), 10
    )


def b64url(wire: bytes) -> str:
    return base64.urlsafe_b64encode(wire).rstrip(b"=").decode()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 10) -> bool:
    """True when the server closes the connection (EOF or reset) within `timeout`."""
    try:
        while await asyncio.wait_for(reader.read(4096), timeout):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    return True


# ---------------------------------------------------------------------------------------------
# DNS over TLS


@pytest.mark.tools("kdig")
async def test_dot_answers_forwarded_and_listed_names_with_kdig(world):
    async with running(world.config()) as service:
        port = service.encrypted.port("dot")
        rc, out = await kdig(world, port, FINE, *trusted(world))
        assert rc == 0 and "NOERROR" in out and FINE_ADDR in out, out
        assert "TLS session" in out
        rc, out = await kdig(world, port, LISTED, *trusted(world))
        assert rc == 0 and STOP_V4 in out and "Censored" in out, out
        dot = service.stats.streams["dot"]
        assert dot.queries == 2 and dot.connections == 2


async def test_dot_negotiates_alpn_dot_and_pipelines(world):
    async with running(world.config()) as service:
        port = service.encrypted.port("dot")
        reader, writer = await tls_connect(port, client_context(world, ["dot"]))
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "dot"
        names = [FINE, LISTED, FINE]
        for i, name in enumerate(names):
            wire = query(name).to_wire()
            wire = (i + 1).to_bytes(2, "big") + wire[2:]
            writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        got = {}
        for _ in names:
            size = int.from_bytes(await reader.readexactly(2), "big")
            msg = dns.message.from_wire(await reader.readexactly(size))
            got[msg.id] = addresses(msg)
        assert got == {1: [FINE_ADDR], 2: [STOP_V4], 3: [FINE_ADDR]}
        writer.close()


@pytest.mark.tools("kdig")
async def test_tls_client_without_sni_is_served_and_counted(world):
    """RFC 7858 clients configured with an address (kdig +tls, opportunistic) send no SNI."""
    async with running(world.config()) as service:
        port = service.encrypted.port("dot")
        rc, out = await kdig(world, port, FINE, "+tls")
        assert rc == 0 and FINE_ADDR in out, out
        assert service.stats.streams["dot"].no_sni == 1
        rc, out = await kdig(world, port, FINE, *trusted(world))
        assert rc == 0 and FINE_ADDR in out, out
        assert service.stats.streams["dot"].no_sni == 1  # that one named the server


@pytest.mark.tools("kdig")
async def test_require_sni_refuses_a_tls_client_without_sni(world):
    async with running(world.config(tls={"require_sni": True})) as service:
        port = service.encrypted.port("dot")
        rc, out = await kdig(world, port, FINE, "+tls", "+retry=0", "+timeout=5")
        assert rc != 0 and FINE_ADDR not in out, out
        assert service.stats.streams["dot"].no_sni == 1
        assert service.stats.streams["dot"].queries == 0
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await tls_connect(port, client_context(world), sni=None)
        rc, out = await kdig(world, port, FINE, *trusted(world))
        assert rc == 0 and FINE_ADDR in out, out


async def test_dot_connection_limit_and_idle_timeout(world):
    config = world.config(dot={"max_connections": 2, "idle_timeout": 0.5})
    async with running(config) as service:
        port = service.encrypted.port("dot")
        dot = service.stats.streams["dot"]
        first = await tls_connect(port, client_context(world))
        second = await tls_connect(port, client_context(world))
        await until(lambda: dot.connections == 2, 10, "two connections accepted")
        third_reader, _ = await tls_connect(port, client_context(world))
        assert await closed_by_server(third_reader)
        assert dot.rejected == 1
        # Idle ones are closed (no query within idle_timeout), and the count goes down.
        assert await closed_by_server(first[0]) and await closed_by_server(second[0])
        assert dot.timeouts == 2
        reader, writer = await tls_connect(port, client_context(world))
        wire = query(FINE).to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        size = int.from_bytes(await reader.readexactly(2), "big")
        assert addresses(dns.message.from_wire(await reader.readexactly(size))) == [FINE_ADDR]
        writer.close()


async def test_a_client_that_never_starts_tls_is_closed(world):
    async with running(world.config(dot={"idle_timeout": 0.5})) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.encrypted.port("dot"))
        writer.write(b"\x00\x1c plain DNS where TLS belongs")  # not a ClientHello
        assert await closed_by_server(reader)
        reader, writer = await asyncio.open_connection("127.0.0.1", service.encrypted.port("dot"))
        assert await closed_by_server(reader)  # silent: closed at the handshake timeout
        assert service.stats.streams["dot"].connections == 0
        rc_ok = await ask(service.port, FINE)
        assert addresses(rc_ok) == [FINE_ADDR]  # the rest of the service is untouched


# ---------------------------------------------------------------------------------------------
# DNS over HTTPS


@pytest.mark.tools("kdig")
async def test_doh_post_and_get_over_http2_with_kdig(world):
    async with running(world.config()) as service:
        port = service.encrypted.port("doh")
        rc, out = await kdig(world, port, FINE, *trusted(world, "+https"))
        assert rc == 0 and FINE_ADDR in out and "HTTP/2-POST" in out, out
        rc, out = await kdig(world, port, LISTED, *trusted(world, "+https-get"))
        assert rc == 0 and STOP_V4 in out and "HTTP/2-GET" in out, out
        assert service.stats.streams["doh"].queries == 2


@pytest.mark.tools("curl")
@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
async def test_doh_with_curl_get_and_post(world, version):
    async with running(world.config()) as service:
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        wire = query(FINE).to_wire()
        base = [tools.path("curl"), "-sS", "-i", version, "--cacert", str(world.cert)]
        rc, out = await run(*base, f"{url}?dns={b64url(wire)}")
        assert rc == 0, out
        head = out.split("\r\n\r\n", 1)[0].lower()
        assert " 200" in head.splitlines()[0] and "content-type: application/dns-message" in head
        assert "cache-control: max-age=300" in head  # the answer's TTL (RFC 8484 §5.1)
        body = world.tmp / "query.bin"
        body.write_bytes(query(LISTED).to_wire())
        rc, out = await run(
            tools.path("curl"),
            "-sS",
            version,
            "--cacert",
            str(world.cert),
            "-o",
            str(world.tmp / "answer.bin"),
            "-H",
            "content-type: application/dns-message",
            "--data-binary",
            f"@{body}",
            url,
        )
        assert rc == 0, out
        answer = dns.message.from_wire((world.tmp / "answer.bin").read_bytes())
        assert addresses(answer) == [STOP_V4]
        assert (16, "Blocked by order of Test Authority; see http://stop.isp.example/") in ede(
            answer
        )


async def test_doh_with_dnspython_over_http2(world):
    async with running(world.config()) as service:
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        for post in (True, False):
            resp = await dns.asyncquery.https(
                query(FINE),
                url,
                timeout=10,
                post=post,
                verify=client_context(world),
                http_version=dns.query.HTTPVersion.H2,
            )
            assert addresses(resp) == [FINE_ADDR]
        resp = await dns.asyncquery.https(
            query(LISTED), url, timeout=10, verify=client_context(world)
        )
        assert addresses(resp) == [STOP_V4]


async def http(port: int, world: World, request: bytes, alpn: str = "http/1.1") -> bytes:
    """One raw HTTP/1.1 exchange over TLS; the whole response (until the server closes)."""
    reader, writer = await tls_connect(port, client_context(world, [alpn]))
    writer.write(request)
    await writer.drain()
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return data


@pytest.mark.tools("curl")
async def test_doh_bad_requests_get_an_http_error_that_names_the_problem(world):
    async with running(world.config()) as service:
        port = service.encrypted.port("doh")
        url = f"https://127.0.0.1:{port}"
        curl = [tools.path("curl"), "-sS", "--http2", "--cacert", str(world.cert)]
        write = ["-w", "\n%{http_code}"]
        wire = query(FINE).to_wire()
        bad_length = b64url(wire) + "A" * ((1 - len(b64url(wire))) % 4 or 4)  # 4n+1 characters
        cases = [
            (["-G", f"{url}/dns-query?dns=***not-base64***"], "400", "not base64url"),
            ([f"{url}/dns-query?dns={bad_length}"], "400", "length"),
            ([f"{url}/dns-query"], "400", "exactly one dns parameter"),
            ([f"{url}/dns-query?dns={b64url(b'short')}"], "400", "not a DNS message"),
            ([f"{url}/other?dns={b64url(wire)}"], "404", "/dns-query"),
            (["-X", "PUT", f"{url}/dns-query"], "405", "GET or POST"),
            (
                ["-H", "content-type: text/plain", "--data-binary", "x" * 20, f"{url}/dns-query"],
                "415",
                "application/dns-message",
            ),
        ]
        for args, status, words in cases:
            rc, out = await run(*curl, *write, *args)
            assert rc == 0, out
            assert out.rstrip().endswith(status) and words in out, (args, out)
        big = world.tmp / "big.bin"
        big.write_bytes(wire + b"\0" * 70000)
        rc, out = await run(
            *curl,
            *write,
            "-H",
            "content-type: application/dns-message",
            "--data-binary",
            f"@{big}",
            f"{url}/dns-query",
        )
        assert out.rstrip().endswith("413"), out
        stats = service.stats.doh_status
        assert stats == {400: 4, 404: 1, 405: 1, 415: 1, 413: 1}, stats
        # A garbled HTTP/1.1 request: 400 and the connection closed.
        out = await http(port, world, b"GARBAGE\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400"), out
        # Garbage where an HTTP/2 connection preface belongs: closed, counted.
        out = await http(port, world, b"\x00" * 64, alpn="h2")
        assert service.stats.streams["doh"].errors == 2
        # The listener still answers.
        rc, out = await run(*curl, f"{url}/dns-query?dns={b64url(wire)}", "-o", "/dev/null")
        assert rc == 0, out


async def test_doh_rate_limit_and_acl_answer_in_dns(world):
    config = world.config(
        ratelimit={"enabled": True, "rate": 1, "burst": 2, "slip": 0},
    )
    async with running(config) as service:
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        rcodes = []
        for _ in range(5):
            resp = await dns.asyncquery.https(
                query(FINE), url, timeout=10, verify=client_context(world)
            )
            rcodes.append(resp.rcode())
        assert rcodes[:2] == [dns.rcode.NOERROR] * 2
        assert dns.rcode.REFUSED in rcodes[2:]
    # A client outside the ACL: REFUSED with EDE 18 inside a 200, like any DNS transport.
    async with running(world.config(acl={"allow_loopback": False})) as service:
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        resp = await dns.asyncquery.https(
            query(FINE), url, timeout=10, verify=client_context(world)
        )
        assert resp.rcode() == dns.rcode.REFUSED and (18, None) in [(c, None) for c, _ in ede(resp)]
    # ... or nothing at all when the ACL drops.
    config = world.config(acl={"allow_loopback": False, "refused": "drop"})
    async with running(config) as service:
        reader, _ = await tls_connect(service.encrypted.port("doh"), client_context(world, ["h2"]))
        assert await closed_by_server(reader)


async def test_doh_http2_many_streams_on_one_connection(world):
    """One HTTP/2 connection, many requests in flight at once (answers in any order)."""
    import httpx

    async with running(world.config(doh={"max_streams": 8})) as service:
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        names = [FINE if i % 2 else LISTED for i in range(40)]
        async with httpx.AsyncClient(http2=True, verify=client_context(world)) as client:

            async def one(name: str) -> list[str]:
                r = await client.post(
                    url,
                    content=query(name).to_wire(),
                    headers={"content-type": "application/dns-message"},
                )
                assert r.status_code == 200 and r.http_version == "HTTP/2"
                return addresses(dns.message.from_wire(r.content))

            got = await asyncio.gather(*(one(n) for n in names))
        assert got == [[FINE_ADDR] if n == FINE else [STOP_V4] for n in names]
        assert service.stats.streams["doh"].connections == 1


# ---------------------------------------------------------------------------------------------
# The application DNS canary


@pytest.mark.tools("dig")
@pytest.mark.parametrize("fast_path", [True, False])
async def test_canary_is_nxdomain_on_every_transport(world, fast_path):
    config = world.config(server={"fast_path": fast_path})
    async with running(config) as service:
        assert (service.resolver.fast is not None) == fast_path or not fast_path
        for _ in range(2):  # never cached: the second is decided the same way
            resp = await ask(service.port, "use-application-dns.net")
            assert resp.rcode() == dns.rcode.NXDOMAIN and not resp.answer
        resp = await ask(service.port, "use-application-dns.net", "AAAA")
        assert resp.rcode() == dns.rcode.NXDOMAIN
        resp = await ask_tcp(service.port, "USE-Application-DNS.net")
        assert resp.rcode() == dns.rcode.NXDOMAIN
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        resp = await dns.asyncquery.https(
            query("use-application-dns.net"), url, timeout=10, verify=client_context(world)
        )
        assert resp.rcode() == dns.rcode.NXDOMAIN
        _, out = await run(
            tools.path("dig"), "-p", str(service.port), "@127.0.0.1", "use-application-dns.net"
        )
        assert "status: NXDOMAIN" in out, out
        assert service.stats.canary == 6
        assert world.up.count("use-application-dns.net") == 0  # never asked upstream
        # Only the name itself: a name below it is resolved as usual.
        resp = await ask(service.port, "x.use-application-dns.net")
        assert addresses(resp) == [FINE_ADDR]
        _, text = await get(service.metrics_port, "/metrics")
        assert "cordon_resolver_doh_canary_total 6.0" in text


async def test_canary_off_forwards_the_name(world):
    async with running(world.config(server={"doh_canary": False})) as service:
        resp = await ask(service.port, "use-application-dns.net")
        assert addresses(resp) == [FINE_ADDR]
        assert service.stats.canary == 0 and world.up.count("use-application-dns.net") == 1


# ---------------------------------------------------------------------------------------------
# Configuration, metrics, reload


def test_configuration_errors_name_the_key_and_the_file(world, tmp_path):
    cert, key = world.cert, world.key
    _, other_key, _ = self_signed(tmp_path, "other.test")
    head = f'[sync]\nroot_keys = ["{ROOT_PUB}"]\n[dot]\nenabled = true\n'
    conf = tmp_path / "resolver.toml"
    err = config_error(conf, head)
    assert "dot enabled: set tls.certificate and tls.private_key" in err
    err = config_error(conf, head + '[tls]\ncertificate = "missing.crt"\nprivate_key = "k"\n')
    assert "tls.certificate" in err and str(tmp_path / "missing.crt") in err
    assert "no such file" in err
    err = config_error(conf, head + f'[tls]\ncertificate = "{key}"\nprivate_key = "{key}"\n')
    assert "tls.certificate" in err and "not a PEM certificate" in err
    err = config_error(conf, head + f'[tls]\ncertificate = "{cert}"\nprivate_key = "{cert}"\n')
    assert "tls.private_key" in err and "not a PEM private key" in err
    err = config_error(conf, head + f'[tls]\ncertificate = "{cert}"\nprivate_key = "{other_key}"\n')
    assert "does not match tls.certificate" in err
    from cryptography.hazmat.primitives import serialization

    locked = tmp_path / "locked.key"
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    locked.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    err = config_error(conf, head + f'[tls]\ncertificate = "{cert}"\nprivate_key = "{locked}"\n')
    assert "tls.private_key" in err and "is encrypted" in err
    err = config_error(conf, head + '[doh]\npath = "dns-query"\n')
    assert "doh.path" in err
    tls = f'[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
    err = config_error(conf, head + "port = 0\n[server]\nworkers = 2\n" + tls)
    assert "dot.port = 0 picks a port per process" in err


async def test_metrics_show_encrypted_transports(world):
    async with running(world.config()) as service:
        url = f"https://127.0.0.1:{service.encrypted.port('doh')}/dns-query"
        await dns.asyncquery.https(query(FINE), url, timeout=10, verify=client_context(world))
        reader, writer = await tls_connect(service.encrypted.port("dot"), client_context(world))
        wire = query(FINE).to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await reader.readexactly(2)
        writer.close()
        _, text = await get(service.metrics_port, "/metrics")
        assert 'cordon_resolver_requests_total{transport="doh"} 1.0' in text
        assert 'cordon_resolver_requests_total{transport="dot"} 1.0' in text
        assert 'cordon_resolver_encrypted_connections_total{transport="dot"} 1.0' in text
        assert "cordon_resolver_tls_certificate_expiry_timestamp_seconds" in text


def serve_config(path: Path, world: World, ports: dict[str, int], metrics: int, workers: int):
    path.write_text(
        f"""
[sync]
root_keys = ["{ROOT_PUB}"]
state_dir = "{world.tmp}"

[server]
listen = ["127.0.0.1"]
port = {ports["dns"]}
workers = {workers}
list_poll_interval = 0.1

[upstream]
servers = ["127.0.0.1:{world.up.port}"]
timeout = 0.5

[blocking]
ipv4 = "{STOP_V4}"

[metrics]
port = {metrics}

[tls]
certificate = "cert.pem"
private_key = "key.pem"

[dot]
enabled = true
port = {ports["dot"]}

[doh]
enabled = true
port = {ports["doh"]}
"""
    )


async def peer_pin(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME), 10
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return hashlib.sha256(der).hexdigest()


@pytest.mark.tools("kdig")
@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_applies_a_renewed_certificate_and_refuses_a_broken_one(world, workers):
    """The real `resolver serve`: a renewed certificate applies to new connections after
    SIGHUP; a broken one is refused with the reason and the running one stays."""
    conf_dir = world.tmp / "conf"
    conf_dir.mkdir()
    (conf_dir / "cert.pem").write_bytes(world.cert.read_bytes())
    (conf_dir / "key.pem").write_bytes(world.key.read_bytes())
    ports = {"dns": free_dns_port(), "dot": free_dns_port(), "doh": free_dns_port()}
    conf = conf_dir / "resolver.toml"
    serve_config(conf, world, ports, free_dns_port(), workers)
    proc = subprocess.Popen(
        [sys.executable, "-m", "resolver.cli", "serve", "--config", str(conf)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = Log(proc)
    try:
        await log.wait_for("answering DNS on" if workers == 1 else "workers answering DNS")
        rc, out = await kdig(world, ports["dot"], LISTED, *trusted(world))
        assert rc == 0 and STOP_V4 in out, out
        assert await peer_pin(ports["dot"]) == world.pin

        renewed = world.tmp / "renewed"
        renewed.mkdir()
        new_cert, new_key, new_pin = self_signed(renewed, SERVER_NAME)
        (conf_dir / "cert.pem").write_bytes(new_cert.read_bytes())
        (conf_dir / "key.pem").write_bytes(new_key.read_bytes())
        proc.send_signal(signal.SIGHUP)
        await log.wait_for("configuration reloaded")
        for kind in ("dot", "doh"):
            assert await peer_pin(ports[kind]) == new_pin, kind
        rc, out = await kdig(
            world,
            ports["doh"],
            FINE,
            f"+tls-ca={new_cert}",
            "+tls-hostname=" + SERVER_NAME,
            "+https",
        )
        assert rc == 0 and FINE_ADDR in out, out

        (conf_dir / "key.pem").write_bytes(world.key.read_bytes())  # no longer the cert's key
        proc.send_signal(signal.SIGHUP)
        line = await log.wait_for("reload refused")
        assert "tls.private_key" in line and "does not match" in line and str(conf) in line
        assert await peer_pin(ports["dot"]) == new_pin
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_service_without_encrypted_listeners_opens_none(world):
    config = make_config(world.tmp, [world.up.port])
    service = ResolverService(config)
    await service.start()
    try:
        assert service.encrypted.servers == {}
        assert service.stats.tls_expiry == 0.0
    finally:
        await service.stop()


def test_status_raises_an_alarm_before_the_certificate_expires():
    from resolver.control import status_view

    base = {"list": {"serial": 1, "entries": 1, "verified_at": 0, "expires": None}}
    now = 1_000_000_000.0
    view = status_view(base | {"tls_expiry": now + 30 * 86400}, {}, {}, now)
    assert "tls_certificate" not in view["alarms"]
    view = status_view(base | {"tls_expiry": now + 3 * 86400 + 5}, {}, {}, now)
    assert view["alarms"]["tls_certificate"] == "the DoT/DoH certificate expires in 3 days"
    view = status_view(base | {"tls_expiry": now - 1}, {}, {}, now)
    assert view["alarms"]["tls_certificate"] == "the DoT/DoH certificate has expired"
    assert "tls_certificate" not in status_view(base, {}, {}, now)["alarms"]


async def h2_client(port: int, world: World):
    """A raw HTTP/2 client (h2) on a TLS connection: (reader, writer, connection). It sends
    whatever headers it is given, valid or not."""
    import h2.config
    import h2.connection

    reader, writer = await tls_connect(port, client_context(world, ["h2"]))
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return reader, writer, conn


def post_headers(port: int) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", "/dns-query"),
        ("content-type", "application/dns-message"),
    ]


async def test_doh_bodies_trickled_on_many_streams_are_bounded(world):
    """Streams opened and fed without end: the connection is closed once it holds more than
    two DNS messages' worth of unfinished bodies; other clients are still served."""
    import h2.events

    async with running(world.config()) as service:
        port = service.encrypted.port("doh")
        reader, writer, conn = await h2_client(port, world)
        closed = None

        async def receive() -> bool:
            nonlocal closed
            data = await asyncio.wait_for(reader.read(65536), 10)
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    closed = event.error_code
            writer.write(conn.data_to_send())
            return bool(data)

        try:
            for stream_id in (1, 3, 5):
                conn.send_headers(stream_id, post_headers(port))
                for _ in range(4):
                    chunk = b"\0" * 15000
                    while closed is None and conn.local_flow_control_window(stream_id) < 15000:
                        await receive()  # the server's WINDOW_UPDATE frames
                    if closed is not None:
                        break
                    conn.send_data(stream_id, chunk)  # never ended
                    writer.write(conn.data_to_send())
                    await writer.drain()
            while await receive():
                pass
        except (ConnectionError, ssl.SSLError):
            pass
        assert closed == 11  # ENHANCE_YOUR_CALM
        assert service.stats.streams["doh"].errors == 1
        assert service.stats.streams["doh"].queries == 0
        url = f"https://127.0.0.1:{port}/dns-query"
        resp = await dns.asyncquery.https(
            query(FINE), url, timeout=10, verify=client_context(world)
        )
        assert addresses(resp) == [FINE_ADDR]


async def test_doh_pings_alone_do_not_keep_a_connection_open(world):
    async with running(world.config(doh={"idle_timeout": 0.5})) as service:
        port = service.encrypted.port("doh")
        reader, writer, conn = await h2_client(port, world)
        doh = service.stats.streams["doh"]
        # Pinging faster than the idle timeout: closed anyway, since no request came.
        try:
            for i in range(200):
                conn.ping(i.to_bytes(8, "big"))
                writer.write(conn.data_to_send())
                await writer.drain()
                if doh.timeouts:
                    break
                await asyncio.wait_for(reader.read(65536), 10)
        except (ConnectionError, ssl.SSLError):
            pass
        await until(lambda: doh.timeouts == 1, 10, "the idle timeout")


async def test_doh_http2_requests_missing_pseudo_headers_get_an_http_error(world):
    import h2.events

    async with running(world.config()) as service:
        port = service.encrypted.port("doh")
        reader, writer, conn = await h2_client(port, world)
        wire = query(FINE).to_wire()
        requests = {
            1: [(":scheme", "https"), (":path", f"/dns-query?dns={b64url(wire)}")],  # no method
            3: [(":method", "GET"), (":scheme", "https")],  # no path
            5: [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", f"/dns-query?dns={b64url(wire)}"),
            ],
        }
        for stream_id, headers in requests.items():
            conn.send_headers(stream_id, headers, end_stream=True)
        writer.write(conn.data_to_send())
        status: dict[int, bytes] = {}
        ended: set[int] = set()
        while ended != set(requests):
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "closed"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
            writer.write(conn.data_to_send())
        assert status == {1: b"405", 3: b"404", 5: b"200"}
        writer.close()
