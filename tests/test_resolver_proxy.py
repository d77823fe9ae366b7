"""PROXY protocol v2 with Debian's dnsdist in front: the ACL and the rate limits see the real
client on UDP and TCP; headers from untrusted senders and malformed headers are refused; the C
and Python paths accept and refuse the same bytes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import time

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest
import tools
from resolver_fixtures import (
    STOP_V4,
    FakeUpstream,
    addresses,
    ede,
    make_config,
    running,
    write_list,
)
from test_resolver_service import free_dns_port

from resolver.proxyv2 import SIGNATURE, parse

ADDR = "198.51.100.7"


def header(client: str | None = "127.0.0.2", *, version: int = 2, cmd: int = 1, extra=b"") -> bytes:
    """A PROXY v2 header (UDP) naming `client`; None gives LOCAL."""
    if client is None:
        return SIGNATURE + bytes([version << 4 | 0, 0x12]) + struct.pack("!H", len(extra)) + extra
    if ":" in client:
        body = socket.inet_pton(socket.AF_INET6, client) + socket.inet_pton(socket.AF_INET6, "::1")
        fam = 0x22
    else:
        body = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
        fam = 0x12
    body += struct.pack("!HH", 40000, 53) + extra
    return SIGNATURE + bytes([version << 4 | cmd, fam]) + struct.pack("!H", len(body)) + body


def wire(name: str = "fine.example", qid: int = 7) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0)
    q.id = qid
    return q.to_wire()


async def send_from(source: str, port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, data)
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except (TimeoutError, ConnectionRefusedError):
            return None
    finally:
        sock.close()


async def proxy_counts(service, key: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await service.snapshot())["proxy"][key] >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"proxy[{key}] never reached {count}")


def config(tmp_path, up_port: int, fast_path: bool, **extra):
    return make_config(
        tmp_path,
        [up_port],
        server={"fast_path": fast_path},
        acl={"allow_loopback": False, "allow": ["127.0.0.2/32", "127.0.0.4/32"]},
        proxy={"trusted": ["127.0.0.1/32"]},
        **extra,
    )


def test_parser_accepts_and_refuses():
    assert parse(header("192.0.2.9") + b"x") == ("192.0.2.9", 28)
    assert parse(header("2001:db8::9")) == ("2001:db8::9", 52)
    assert parse(header(None)) == (None, 16)
    assert parse(header("192.0.2.9", extra=b"\x04\x00\x01z")) == ("192.0.2.9", 32)
    bad = [
        b"",
        SIGNATURE,
        header(version=1),
        header(cmd=2),
        header()[:20],  # shorter than it says
        SIGNATURE + b"\x21\x12\x00\x04" + b"\x00" * 4,  # INET with 4 address bytes
        SIGNATURE + b"\x21\x32\x00\x00",  # AF_UNIX
        SIGNATURE + b"\x21\x12\x02\x01" + b"\x00" * 513,  # longer than 512
    ]
    for data in bad:
        assert parse(data) is None, data


@pytest.mark.tools("dnsdist", "dig")
@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
async def test_dnsdist_in_front_real_client_seen_on_udp_and_tcp(tmp_path, fast_path):
    up = await FakeUpstream().start()
    up.add("fine.example", "A", ADDR)
    write_list(tmp_path, ["blocked.example"])
    cfg = config(
        tmp_path,
        up.port,
        fast_path,
        ratelimit={"enabled": True, "rate": 0.001, "burst": 4, "slip": 0},
    )
    dd_port = free_dns_port()
    try:
        async with running(cfg) as service:
            conf = tmp_path / "dnsdist.conf"
            conf.write_text(
                f"""
setLocal("127.0.0.1:{dd_port}")
addACL("127.0.0.0/8")
newServer({{address="127.0.0.1:{service.port}", useProxyProtocol=true, checkInterval=3600}})
"""
            )
            proc = subprocess.Popen(
                [tools.path("dnsdist"), "--supervised", "--disable-syslog", "-C", str(conf)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                # dnsdist is ready when it answers (through us) for the allowed client.
                deadline = time.monotonic() + 30
                resp = None
                while time.monotonic() < deadline:
                    assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
                    raw = await send_from("127.0.0.2", dd_port, wire(), 0.5)
                    if raw is not None:
                        resp = dns.message.from_wire(raw)
                        break
                    await asyncio.sleep(0.1)  # not listening yet
                assert resp is not None and addresses(resp) == [ADDR]

                async def via(source: str, name: str, tcp: bool = False) -> dns.message.Message:
                    q = dns.message.make_query(name, "A", use_edns=0)
                    query = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
                    return await query(q, "127.0.0.1", port=dd_port, timeout=3, source=source)

                # The ACL applies to the real client, over UDP and TCP.
                r = await via("127.0.0.2", "www.blocked.example")
                assert addresses(r) == [STOP_V4]
                r = await via("127.0.0.2", "fine.example", tcp=True)
                assert addresses(r) == [ADDR]
                for tcp in (False, True):
                    r = await via("127.0.0.3", "fine.example", tcp=tcp)
                    assert r.rcode() == dns.rcode.REFUSED and ede(r)[0][0] == 18, r
                # Rate limits too: 127.0.0.2 spent its burst of 4 (3 so far + this one); more
                # is dropped; 127.0.0.4, behind the same dnsdist, has its own bucket.
                await via("127.0.0.2", "fine.example")
                with pytest.raises(dns.exception.Timeout):
                    await via("127.0.0.2", "fine.example")
                assert addresses(await via("127.0.0.4", "fine.example")) == [ADDR]
                snap = await service.snapshot()
                assert snap["ratelimited"]["drop"] >= 1 and snap["proxy"] == {
                    "refused": 0,
                    "errors": 0,
                }
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
    finally:
        await up.stop()


@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
async def test_untrusted_and_malformed_headers_are_refused(tmp_path, fast_path):
    up = await FakeUpstream().start()
    up.add("fine.example", "A", ADDR)
    try:
        async with running(config(tmp_path, up.port, fast_path)) as service:
            port = service.port
            # A header from a sender not trusted (127.0.0.2 is an allowed client): refused.
            assert await send_from("127.0.0.2", port, header("127.0.0.4") + wire(), 0.3) is None
            await proxy_counts(service, "refused", 1)
            # Without a header the same client is answered directly.
            raw = await send_from("127.0.0.2", port, wire())
            assert raw is not None and addresses(dns.message.from_wire(raw)) == [ADDR]
            # The trusted sender: a valid header is answered for the client it names...
            raw = await send_from("127.0.0.1", port, header("127.0.0.2") + wire(qid=9))
            assert raw is not None and dns.message.from_wire(raw).id == 9
            raw = await send_from("127.0.0.1", port, header("127.0.0.9") + wire())
            assert dns.message.from_wire(raw or b"").rcode() == dns.rcode.REFUSED
            # ...and anything else from it is dropped and counted.
            for errors, bad in enumerate(
                (wire(), header(version=1) + wire(), header()[:20], SIGNATURE), start=1
            ):
                assert await send_from("127.0.0.1", port, bad, 0.3) is None
                await proxy_counts(service, "errors", errors)
            # LOCAL (a health check) keeps the sender, which the ACL does not allow here.
            raw = await send_from("127.0.0.1", port, header(None) + wire())
            assert dns.message.from_wire(raw or b"").rcode() == dns.rcode.REFUSED
            # TCP: an untrusted sender's header closes the connection; so does a bad header
            # from the trusted one; a good one is served for the client it names.
            for source, head in (
                ("127.0.0.2", header("127.0.0.4")),
                ("127.0.0.1", header(version=3)),
            ):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0)
                )
                msg = wire()
                writer.write(head + struct.pack("!H", len(msg)) + msg)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.1", 0)
            )
            msg = wire(qid=11)
            head = header("127.0.0.2")
            writer.write(head[:10])  # the header may arrive in pieces
            await writer.drain()
            writer.write(head[10:] + struct.pack("!H", len(msg)) + msg)
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
            resp = dns.message.from_wire(await reader.readexactly(size))
            assert resp.id == 11 and addresses(resp) == [ADDR]
            writer.close()
            snap = await service.snapshot()
            assert snap["proxy"]["refused"] >= 2 and snap["internal_errors"] == 0
    finally:
        await up.stop()


@pytest.mark.skipif(not __import__("resolver.fastpath").fastpath.available(), reason="no C path")
async def test_c_and_python_paths_answer_proxied_datagrams_alike(tmp_path):
    """The same datagrams from the trusted sender and from another one, to a C-path and a
    Python-path server: identical answers, identical silences, identical counters."""
    up = await FakeUpstream().start()
    up.add("fine.example", "A", ADDR)
    write_list(tmp_path, ["blocked.example"])
    variants = [
        ("127.0.0.1", header("127.0.0.2") + wire("www.blocked.example")),
        ("127.0.0.1", header("127.0.0.2", extra=b"\x04\x00\x01z") + wire("www.blocked.example")),
        ("127.0.0.1", header("127.0.0.8") + wire("www.blocked.example")),
        ("127.0.0.1", header("::ffff:127.0.0.2") + wire("www.blocked.example")),
        ("127.0.0.1", header(None) + wire("www.blocked.example")),
        ("127.0.0.1", header("127.0.0.2") + b"\x00\x01"),  # FORMERR-worthy after the header
        ("127.0.0.1", header(cmd=3) + wire()),
        ("127.0.0.1", wire("www.blocked.example")),
        ("127.0.0.2", header("127.0.0.2") + wire("www.blocked.example")),
        ("127.0.0.2", wire("www.blocked.example")),
    ]
    results = {}
    try:
        for fast_path in (True, False):
            async with running(config(tmp_path, up.port, fast_path)) as service:
                out = []
                for source, data in variants:
                    out.append(await send_from(source, service.port, data, 0.3))
                snap = await service.snapshot()
                results[fast_path] = (out, snap["proxy"], snap["outcomes"])
        assert results[True] == results[False]
        assert results[True][1] == {"refused": 1, "errors": 2}
    finally:
        await up.stop()
