"""Bad input never breaks the resolver: fuzzing, protocol errors, TCP abuse, the client ACL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from resolver_fixtures import (
    STOP_V4,
    FakeUpstream,
    ThreadedServer,
    addresses,
    ask,
    ask_raw,
    ede,
    make_config,
    query,
    running,
    udp_exchange,
    write_list,
)

from blocklist.config import ConfigError, validate_config
from resolver import stats as S
from resolver.config import ResolverConfig
from resolver.dnswire import Query
from resolver.engine import Resolver
from resolver.service import make_answers

LISTED = ["blocked.example"]
HEADER = struct.Struct("!HHHHHH")


# ---------------------------------------------------------------------------------------------
# Protocol errors


async def test_protocol_errors_get_the_right_rcode(tmp_path):
    up = await FakeUpstream().start()
    write_list(tmp_path, LISTED)
    try:
        async with running(make_config(tmp_path, [up.port])) as service:
            port = service.port
            base = query("blocked.example").to_wire()
            qid = HEADER.unpack_from(base)[0]
            # QDCOUNT 2 -> FORMERR
            two = HEADER.pack(qid, 0x0100, 2, 0, 0, 1) + base[12:]
            resp = dns.message.from_wire(await ask_raw(port, two), question_only=True)
            assert resp.rcode() == dns.rcode.FORMERR
            # QDCOUNT 0 -> FORMERR
            none = HEADER.pack(qid, 0x0100, 0, 0, 0, 0)
            assert (await ask_raw(port, none))[3] & 0xF == dns.rcode.FORMERR
            # An opcode we do not implement -> NOTIMP
            notify = dns.message.make_query("blocked.example", "SOA")
            notify.set_opcode(dns.opcode.NOTIFY)
            resp = dns.message.from_wire(await ask_raw(port, notify.to_wire()))
            assert resp.rcode() == dns.rcode.NOTIMP
            # EDNS version 1 -> BADVERS, with an OPT of version 0
            v1 = dns.message.make_query("allowed.example", "A", use_edns=1)
            resp = dns.message.from_wire(await ask_raw(port, v1.to_wire()))
            assert resp.rcode() == dns.rcode.BADVERS and resp.edns == 0
            # Responses and runts are dropped silently.
            response = dns.message.make_response(query("blocked.example")).to_wire()
            assert await ask_raw(port, response, timeout=0.3) is None
            assert await ask_raw(port, b"\x12\x34\x01", timeout=0.3) is None
            # Trailing garbage -> FORMERR
            assert (await ask_raw(port, base + b"\x00"))[3] & 0xF == dns.rcode.FORMERR
            # Still answering
            assert addresses(await ask(port, "blocked.example")) == [STOP_V4]
            assert service.stats.internal_errors == 0
    finally:
        await up.stop()


# ---------------------------------------------------------------------------------------------
# Fuzzing: hypothesis picks seeds and recipes, each example expands into a batch of 1000 packets.

BATCH = 1000
EXAMPLES = 100  # 100 x 1000 = 100k malformed packets
NAMES = ["blocked.example", "www.blocked.example", "allowed.example", "a.b.c.example", "."]
TYPES = ["A", "AAAA", "HTTPS", "TXT", "MX", "ANY", "SOA", 0, 65535]


def valid_query(rng: random.Random) -> bytes:
    name = rng.choice(NAMES)
    edns = rng.random() < 0.7
    q = dns.message.make_query(
        name, rng.choice(TYPES), use_edns=0 if edns else False, payload=rng.choice([0, 512, 4096])
    )
    if edns and rng.random() < 0.3:
        q.use_edns(
            0, 0, 1232, options=[dns.edns.GenericOption(rng.randrange(1, 65535), b"\x01" * 4)]
        )
    q.id = rng.randrange(65536)
    return q.to_wire()


def mutate(rng: random.Random, kind: int) -> bytes:
    wire = bytearray(valid_query(rng))
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(0, 600))
    if kind == 1:  # bit flips
        for _ in range(rng.randrange(1, 9)):
            i = rng.randrange(len(wire))
            wire[i] ^= 1 << rng.randrange(8)
        wire[2] &= 0x7F  # keep QR clear so most reach the parser proper
        return bytes(wire)
    if kind == 2:  # truncation
        return bytes(wire[: rng.randrange(0, len(wire))])
    if kind == 3:  # trailing garbage
        return bytes(wire) + rng.randbytes(rng.randrange(1, 100))
    if kind == 4:  # header counts and flags
        struct.pack_into(
            "!HHHHH",
            wire,
            2,
            rng.randrange(65536) & 0x7FFF,
            rng.choice([0, 1, 2, 65535]),
            rng.choice([0, 1, 65535]),
            rng.choice([0, 1, 65535]),
            rng.choice([0, 1, 2, 65535]),
        )
        return bytes(wire)
    if kind == 5:  # hostile names: pointers, loops, long labels, overlong names
        head = HEADER.pack(rng.randrange(65536), 0x0100, 1, 0, 0, 0)
        choice = rng.randrange(4)
        if choice == 0:
            name = b"\xc0\x0c"
        elif choice == 1:
            name = bytes([rng.randrange(64, 256)]) + b"abc\x00"
        elif choice == 2:
            name = (
                b"\x3f"
                + b"a" * 63
                + b"\x3f"
                + b"b" * 63
                + b"\x3f"
                + b"c" * 63
                + b"\x3f"
                + b"d" * 63
                + b"\x00"
            )
        else:
            name = b"".join(b"\x01x" for _ in range(rng.randrange(100, 140))) + b"\x00"
        return head + name + b"\x00\x01\x00\x01"
    # kind 6: OPT records with wrong lengths, two OPTs, non-root owners, odd versions
    base = bytearray(valid_query(random.Random(rng.random())))
    qid, flags = HEADER.unpack_from(base)[:2]
    qend = 12
    while base[qend]:
        qend += 1 + base[qend]
    qend += 5
    opt = struct.pack(
        "!BHHBBHH",
        0 if rng.random() < 0.8 else 1,
        41,
        rng.randrange(65536),
        rng.randrange(256),
        rng.choice([0, 0, 1, 255]),
        rng.randrange(65536),
        rng.choice([0, 4, 8, 300]),
    ) + rng.randbytes(rng.choice([0, 4, 8]))
    count = rng.choice([1, 2])
    return HEADER.pack(qid, flags, 1, 0, 0, count) + bytes(base[12:qend]) + opt * count


def make_batch(seed: int, kinds: list[int]) -> list[bytes]:
    rng = random.Random(seed)
    return [mutate(rng, kinds[i % len(kinds)]) for i in range(BATCH)]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    state = tmp_path_factory.mktemp("fuzz-state")
    write_list(state, LISTED)

    def config(upstream_port: int) -> ResolverConfig:
        return make_config(state, [upstream_port], upstream={"timeout": 0.5})

    with ThreadedServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def direct_resolver(tmp_path_factory):
    """A second resolver fed packets directly: every packet reaches `handle`, none is lost."""
    state = tmp_path_factory.mktemp("direct-state")
    config = make_config(state, [53])
    return Resolver(config, S.Stats([f"127.0.0.1:{53}"]), make_answers(config.blocking, "", 1))


PROBE = query("www.blocked.example").to_wire()


def probe_ok(port: int) -> bool:
    raw = udp_exchange(port, PROBE, timeout=3)
    return raw is not None and addresses(dns.message.from_wire(raw)) == [STOP_V4]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    kinds=st.lists(st.integers(0, 6), min_size=1, max_size=7),
)
def test_fuzz_100k_malformed_packets(fuzz_server, direct_resolver, seed, kinds):
    batch = make_batch(seed, kinds)
    before = direct_resolver.stats.internal_errors
    for packet in batch:
        check_direct(packet, direct_resolver.handle(packet, True, True))
    assert direct_resolver.stats.internal_errors == before
    port = fuzz_server.port
    udp_before = fuzz_server.call(lambda: fuzz_server.service.stats.snapshot())["transport"]["udp"]
    sent_ids = {packet[:2] for packet in batch if len(packet) >= 2}
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        for i, packet in enumerate(batch):
            with contextlib.suppress(OSError):  # an ICMP error from an earlier send
                s.send(packet)
            if i % 250 == 249:
                assert probe_ok(port)  # paces the sender and checks the server answers
                replies += drain_replies(s, sent_ids)
        assert probe_ok(port)
        replies += drain_replies(s, sent_ids)
    assert replies > 0  # the replies read were parsed and matched to a query sent
    stats = fuzz_server.call(lambda: fuzz_server.service.stats.snapshot())
    assert stats["internal_errors"] == 0 and fuzz_server.errors == []
    assert stats["transport"]["udp"] - udp_before >= 0.9 * BATCH  # the server saw the batch


def check_direct(packet: bytes, result: bytes | Query | None) -> None:
    """What `handle` returns for a packet: nothing, a query to forward under the packet's id,
    or a reply that parses, is a response, and carries the packet's id."""
    if result is None:
        return
    if isinstance(result, Query):
        assert result.id == int.from_bytes(packet[:2])
        return
    assert isinstance(result, bytes)
    assert result[:2] == packet[:2], (packet.hex(), result.hex())
    assert parse_reply(result).flags & dns.flags.QR


def parse_reply(raw: bytes) -> dns.message.Message:
    """dnspython's reading of a reply. The opcode is read as QUERY: a NOTIMP answer to an
    UPDATE echoes an A question that dnspython's UPDATE parser would reject as a zone."""
    return dns.message.from_wire(raw[:2] + bytes([raw[2] & 0x87]) + raw[3:])


def drain_replies(s: socket.socket, sent_ids: set[bytes]) -> int:
    """Read every reply waiting on `s`; each parses, is a response, and answers a query sent."""
    count = 0
    while True:
        try:
            raw = s.recv(65535)
        except BlockingIOError:
            return count
        except OSError:
            continue
        assert raw[:2] in sent_ids, raw.hex()
        assert parse_reply(raw).flags & dns.flags.QR
        count += 1


# ---------------------------------------------------------------------------------------------
# TCP abuse


@pytest.fixture
async def tcp_server(tmp_path):
    up = await FakeUpstream().start()
    up.add("allowed.example", "A", "198.51.100.7")
    write_list(tmp_path, LISTED)
    config = make_config(
        tmp_path,
        [up.port],
        server={"tcp_idle_timeout": 0.5, "tcp_max_connections": 4, "tcp_max_pipelined": 2},
    )
    async with running(config) as service:
        yield service
    await up.stop()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
    return await asyncio.wait_for(reader.readexactly(length), 3)


async def test_tcp_pipelining_and_half_close(tcp_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_server.port)
    names = ["blocked.example", "allowed.example", "x.blocked.example", "allowed.example"]
    queries = [query(n) for n in names]
    for q in queries:
        w = q.to_wire()
        writer.write(struct.pack("!H", len(w)) + w)
    writer.write_eof()
    answers = {}
    for _ in names:
        msg = dns.message.from_wire(await read_frame(reader))
        answers[msg.id] = addresses(msg)
    assert answers == {
        q.id: [STOP_V4] if "blocked" in n else ["198.51.100.7"]
        for q, n in zip(queries, names, strict=True)
    }
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed after the last answer
    writer.close()


async def test_tcp_slow_client_and_huge_length_are_cut_off(tcp_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_server.port)
    writer.write(b"\xff\xff" + b"\x00" * 10)  # announces 65535 bytes, sends 10, then stalls
    assert await asyncio.wait_for(reader.read(), 3) == b""  # idle timeout closed it
    writer.close()
    # A trickle of bytes never completing a message (length 257) is cut off too.
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_server.port)
    closed = False
    for _ in range(30):
        try:
            writer.write(b"\x01")
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.1)
        if reader.at_eof() or writer.transport.is_closing():
            closed = True
            break
    data = await asyncio.wait_for(reader.read(), 3) if not closed else b""
    assert closed or data == b""
    writer.close()
    assert tcp_server.stats.streams["tcp"].timeouts >= 2


async def test_tcp_bad_frame_length_closes(tcp_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_server.port)
    writer.write(b"\x00\x05hello")
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
    assert tcp_server.stats.streams["tcp"].errors == 1


async def test_tcp_connection_limit(tcp_server):
    conns = [await asyncio.open_connection("127.0.0.1", tcp_server.port) for _ in range(4)]
    for _ in range(200):  # until the server has accepted all four
        if tcp_server.stats.tcp_connections == 4:
            break
        await asyncio.sleep(0.01)
    assert tcp_server.stats.tcp_connections == 4
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_server.port)
    assert await asyncio.wait_for(reader.read(), 3) == b""  # the fifth is dropped at once
    assert tcp_server.stats.tcp_rejected == 1
    for _, w in conns:
        w.close()
    writer.close()


# ---------------------------------------------------------------------------------------------
# ACL


async def test_acl_refuses_clients_outside(tmp_path):
    up = await FakeUpstream().start()
    write_list(tmp_path, LISTED)
    config = make_config(
        tmp_path, [up.port], acl={"allow": ["192.0.2.0/24"], "allow_loopback": False}
    )
    try:
        async with running(config) as service:
            resp = await ask(service.port, "allowed.example")
            assert resp.rcode() == dns.rcode.REFUSED
            assert [c for c, _ in ede(resp)] == [18]
            resp = await ask(service.port, "blocked.example")
            assert resp.rcode() == dns.rcode.REFUSED
            assert up.seen == []
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            w = query("allowed.example").to_wire()
            writer.write(struct.pack("!H", len(w)) + w)
            assert dns.message.from_wire(await read_frame(reader)).rcode() == dns.rcode.REFUSED
            writer.close()
        config = make_config(
            tmp_path,
            [up.port],
            acl={"allow": ["192.0.2.0/24"], "allow_loopback": False, "refused": "drop"},
        )
        async with running(config) as service:
            assert await ask_raw(service.port, query("allowed.example").to_wire(), 0.3) is None
            assert service.stats.totals()[0][S.DROPPED] == 1
    finally:
        await up.stop()


async def test_acl_allows_listed_network_on_another_loopback_address(tmp_path):
    """Bound on 127.0.0.2 and allowing only 127.0.0.2/32: a client from 127.0.0.2 is served,
    one from 127.0.0.1 is refused."""
    up = await FakeUpstream().start()
    write_list(tmp_path, LISTED)
    config = make_config(
        tmp_path,
        [up.port],
        server={"listen": ["127.0.0.2"]},
        acl={"allow": ["127.0.0.2/32"], "allow_loopback": False},
    )
    try:
        async with running(config) as service:
            wire = query("blocked.example").to_wire()
            loop = asyncio.get_running_loop()
            results = {}
            for source in ("127.0.0.2", "127.0.0.1"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.bind((source, 0))
                await loop.sock_connect(sock, ("127.0.0.2", service.port))
                await loop.sock_sendall(sock, wire)
                raw = await asyncio.wait_for(loop.sock_recv(sock, 65535), 3)
                sock.close()
                results[source] = dns.message.from_wire(raw).rcode()
            assert results == {"127.0.0.2": dns.rcode.NOERROR, "127.0.0.1": dns.rcode.REFUSED}
    finally:
        await up.stop()


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2000::/3"])
def test_acl_refuses_open_resolver_configs(tmp_path, network):
    data = {
        "sync": {"root_keys": [make_config(tmp_path, [53]).sync.root_keys[0]]},
        "acl": {"allow": [network]},
    }
    with pytest.raises(ConfigError, match="open resolver"):
        validate_config(data, ResolverConfig, "resolver.toml")
