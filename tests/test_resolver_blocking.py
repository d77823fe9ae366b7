"""Listed names end to end: a real server on loopback, dnspython and dig as clients."""

from __future__ import annotations

import asyncio
import subprocess

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import tools
from resolver_fixtures import (
    AUTHORITY,
    STOP_URL,
    STOP_V4,
    STOP_V6,
    FakeUpstream,
    addresses,
    ask,
    ask_raw,
    ask_tcp,
    ede,
    make_config,
    query,
    running,
    write_list,
)

LISTED = ["blocked.example", "another.test"]
URL_ONLY = "shared.example/album/42"


@pytest.fixture
async def upstream():
    up = await FakeUpstream().start()
    up.add("allowed.example", "A", "198.51.100.7")
    up.add("shared.example", "A", "198.51.100.8")
    yield up
    await up.stop()


@pytest.fixture
async def server(tmp_path, upstream):
    write_list(tmp_path, LISTED, urls=[URL_ONLY])
    async with running(make_config(tmp_path, [upstream.port])) as service:
        yield service


def blocked_common(resp: dns.message.Message, q: dns.message.Message) -> None:
    assert resp.id == q.id
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.QR and resp.flags & dns.flags.RA
    assert not resp.flags & (dns.flags.AA | dns.flags.TC)
    assert resp.question == q.question


@pytest.mark.parametrize("name", ["blocked.example", "www.blocked.example", "a.b.c.another.test"])
async def test_a_and_aaaa_get_the_stop_page(server, upstream, name):
    q = query(name, "A")
    resp = await ask(server.port, q)
    blocked_common(resp, q)
    assert addresses(resp) == [STOP_V4]
    assert resp.answer[0].ttl == 60
    codes = ede(resp)
    assert [c for c, _ in codes] == [4, 16]
    text = dict(codes)[16]
    assert AUTHORITY in text and STOP_URL in text
    q6 = query(name, "AAAA")
    resp = await ask(server.port, q6)
    blocked_common(resp, q6)
    assert addresses(resp) == [STOP_V6]
    assert upstream.count(name) == 0  # never forwarded


@pytest.mark.parametrize("rdtype", ["HTTPS", "SVCB", "MX", "TXT", "NS", "CAA", 65, 64])
async def test_other_types_get_nodata_with_soa(server, rdtype):
    q = query("www.blocked.example", rdtype)
    resp = await ask(server.port, q)
    blocked_common(resp, q)
    assert resp.answer == []
    assert resp.authority[0].rdtype == dns.rdatatype.SOA
    assert resp.authority[0].name == q.question[0].name
    assert [c for c, _ in ede(resp)] == [16]  # censored, nothing forged


async def test_any_gets_the_address(server):
    resp = await ask(server.port, "blocked.example", "ANY")
    assert addresses(resp) == [STOP_V4]


async def test_case_is_preserved_0x20(server):
    q = query("wWw.BlOcKeD.ExAmPlE", "A")
    wire = q.to_wire()
    raw = await ask_raw(server.port, wire)
    assert raw is not None
    assert raw[12 : 12 + 25] == wire[12 : 12 + 25]  # question bytes, case included
    assert b"wWw\x07BlOcKeD\x07ExAmPlE" in raw
    resp = dns.message.from_wire(raw)
    assert addresses(resp) == [STOP_V4]


async def test_no_edns_query_gets_no_opt(server):
    q = query("blocked.example", "A", edns=False)
    resp = await ask(server.port, q)
    assert resp.edns == -1 and not resp.options
    assert addresses(resp) == [STOP_V4]


async def test_do_bit_echoed(server):
    resp = await ask(server.port, "blocked.example", "A", do=True)
    assert resp.ednsflags & dns.flags.DO


async def test_tcp_blocked(server):
    resp = await ask_tcp(server.port, "x.blocked.example", "AAAA")
    assert addresses(resp) == [STOP_V6]


async def test_url_entries_and_unlisted_names_are_forwarded(server, upstream):
    resp = await ask(server.port, "shared.example")
    assert addresses(resp) == ["198.51.100.8"]
    resp = await ask(server.port, "allowed.example")
    assert addresses(resp) == ["198.51.100.7"]
    assert not ede(resp)
    # A name that merely ends like a listed one is not below it.
    resp = await ask(server.port, "notblocked.example")
    assert resp.rcode() == dns.rcode.NXDOMAIN


async def test_without_ipv6_aaaa_is_nodata(tmp_path, upstream):
    write_list(tmp_path, LISTED)
    config = make_config(tmp_path, [upstream.port], blocking={"ipv6": ""})
    async with running(config) as service:
        resp = await ask(service.port, "blocked.example", "AAAA")
        assert resp.answer == [] and resp.rcode() == dns.rcode.NOERROR
        assert resp.authority[0].rdtype == dns.rdatatype.SOA
        assert [c for c, _ in ede(resp)] == [16]
        resp = await ask(service.port, "blocked.example", "A")
        assert addresses(resp) == [STOP_V4]


async def test_custom_ede_text_and_ttl(tmp_path, upstream):
    write_list(tmp_path, LISTED)
    config = make_config(
        tmp_path, [upstream.port], blocking={"ede_text": "Bloqué — voir la page", "ttl": 30}
    )
    async with running(config) as service:
        resp = await ask(service.port, "blocked.example")
        assert dict(ede(resp))[16] == "Bloqué — voir la page"
        assert resp.answer[0].ttl == 30


async def test_chaos_class_for_listed_name_is_refused(server):
    q = dns.message.make_query("blocked.example", "TXT", rdclass="CH", use_edns=0)
    resp = await ask(server.port, q)
    assert resp.rcode() == dns.rcode.REFUSED


@pytest.mark.tools("dig")
async def test_dig_sees_the_stop_page(server):
    def run(*args: str) -> str:
        return subprocess.run(
            [tools.path("dig"), "-p", str(server.port), "@127.0.0.1", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout

    out = await asyncio.to_thread(run, "www.blocked.example", "A")
    assert "status: NOERROR" in out
    assert f"www.blocked.example.\t60\tIN\tA\t{STOP_V4}" in out
    assert "EDE: 16 (Censored)" in out and "EDE: 4 (Forged Answer)" in out
    out = await asyncio.to_thread(run, "www.blocked.example", "HTTPS")
    assert "ANSWER: 0" in out and "SOA" in out
    out = await asyncio.to_thread(run, "+tcp", "blocked.example", "AAAA")
    assert STOP_V6 in out
    out = await asyncio.to_thread(run, "+noedns", "blocked.example", "A")
    assert STOP_V4 in out and "OPT PSEUDOSECTION" not in out


async def test_repeated_query_is_answered_alike(server):
    """The second identical query (another id) gets the same bytes but the id, counted the
    same way, on whichever path answers (C when built)."""
    q = query("www.blocked.example", "A")
    first = await ask_raw(server.port, q.to_wire())
    q.id = (q.id + 1) & 0xFFFF
    second = await ask_raw(server.port, q.to_wire())
    assert second[:2] == q.id.to_bytes(2, "big")
    assert second[2:] == first[2:]
    stats = server.stats
    assert stats.totals()[0][0] == 2 and sum(stats.blocked_by_entry.values()) == 2


class FullSendBuffer:
    """The listener's socket, whose `sendto` finds the send buffer full `fail` times."""

    def __init__(self, sock, fail: int) -> None:
        self.sock = sock
        self.fail = fail

    def __getattr__(self, name):
        return getattr(self.sock, name)

    def sendto(self, data, addr):
        if self.fail:
            self.fail -= 1
            raise BlockingIOError
        return self.sock.sendto(data, addr)


async def test_replies_wait_for_a_full_send_buffer(server, upstream):
    udp = server.listeners.udp[0]
    udp.sock = FullSendBuffer(udp.sock, fail=3)
    names = ["blocked.example", "allowed.example", "www.another.test", "blocked.example"]
    answers = await asyncio.gather(*(ask(server.port, n) for n in names))
    assert [addresses(a) for a in answers] == [[STOP_V4], ["198.51.100.7"], [STOP_V4], [STOP_V4]]
    assert udp.sock.fail == 0 and not udp.backlog
