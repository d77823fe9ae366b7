"""The compiled UDP fast path gives the same bytes as the pure-Python reference path.

Two resolvers with the same config, list and cache contents: one answers through the C engine
(`answer_udp`, exactly what the UDP loop does per datagram: C first, Python for what C passes
back), the other through `handle` alone. A corpus of every answer type in docs/resolver.md, EDNS
variants, 0x20 case, classes, flags, ACL refusals and malformed packets (the fuzz corpus of
test_resolver_robust plus hand-made ones) must give identical results and identical counters,
before a list is loaded, with a list, and after a swap that changes which cached names are
listed. The C path must have answered the bulk itself, so the test cannot pass by passing
everything back to Python.
"""

from __future__ import annotations

import random
import socket
import struct
import types

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from resolver_fixtures import AUTHORITY, ask_raw, list_state, make_config, running, write_list
from test_resolver_robust import make_batch

import resolver.engine
from resolver import fastpath
from resolver import stats as S
from resolver.dnswire import Query, cache_key, inspect_response, parse_query
from resolver.engine import Resolver
from resolver.exemptions import Exemptions
from resolver.matcher import Matcher
from resolver.service import make_answers
from resolver.upstream import upstream_names

pytestmark = pytest.mark.skipif(not fastpath.available(), reason=str(fastpath.UNAVAILABLE))

T0 = 1000.0  # when the cache entries were stored
NOW = T0 + 10.5  # when the corpus is asked: every cached TTL is 10 s older

LISTED = ["blocked.example", "deep.other.example"]
LISTED_AFTER_SWAP = ["allowed.example", "nx.example", "target.example"]
NAMES = [
    "blocked.example",
    "www.blocked.example",
    "WwW.BlOcKeD.ExAmPlE",
    "a.b.c.deep.other.example",
    "allowed.example",
    "ALLOWED.example",
    "alias.example",
    "nx.example",
    "nodata.example",
    "big.example",
    "expired.example",
    "noopt.example",
    "miss.example",
    "example",
    ".",
    "a\\.b.blocked.example",  # a label holding a dot: passed to Python
]
TYPES = ["A", "AAAA", "MX", "TXT", "HTTPS", "ANY", "SOA"]
CLASSES = [1, 3, 255]


def client_query(
    name: str,
    rdtype: str | int,
    *,
    rdclass: int = 1,
    edns: int | bool = 0,
    payload: int = 1232,
    do: bool = False,
    rd: bool = True,
    cd: bool = False,
    options: tuple = (),
    qid: int = 0x1234,
) -> bytes:
    q = dns.message.make_query(
        name, rdtype, rdclass=rdclass, use_edns=edns, payload=payload, options=list(options)
    )
    q.id = qid
    if do:
        q.want_dnssec(True)
    if not rd:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    return q.to_wire()


def edns_variants() -> list[dict]:
    cookie = dns.edns.GenericOption(10, b"\x01" * 8)
    padding = dns.edns.GenericOption(12, b"\x00" * 60)
    return [
        {"edns": False},
        {"edns": 0},
        {"edns": 0, "payload": 512},
        {"edns": 0, "payload": 100},  # clamped to 512
        {"edns": 0, "payload": 4096},
        {"edns": 0, "do": True},
        {"edns": 0, "options": (cookie,)},
        {"edns": 0, "options": (cookie, padding), "do": True},
        {"edns": 1},  # BADVERS
    ]


def upstream_reply(
    name: str,
    rdtype: str,
    answer: list[tuple[str, int, str, str]] = (),  # type: ignore[assignment]
    authority: list[tuple[str, int, str, str]] = (),  # type: ignore[assignment]
    *,
    rcode: int = 0,
    edns: bool = True,
    do: bool = False,
) -> tuple[bytes, bytes]:
    """(the client query it answers, the upstream's reply)."""
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, want_dnssec=do)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for section, records in ((r.answer, answer), (r.authority, authority)):
        for owner, ttl, rtype, text in records:
            section.append(dns.rrset.from_text(owner, ttl, "IN", rtype, text))
    return q.to_wire(), r.to_wire(max_size=65535)


SOA = ("example.", 900, "SOA", "ns.example. host.example. 1 3600 600 86400 300")
REPLIES = [
    upstream_reply("allowed.example", "A", [("allowed.example.", 300, "A", "198.51.100.7")]),
    upstream_reply(
        "allowed.example", "A", [("allowed.example.", 300, "A", "198.51.100.7")], do=True
    ),
    upstream_reply("allowed.example", "AAAA", [("allowed.example.", 300, "AAAA", "2001:db8::7")]),
    upstream_reply("nx.example", "A", authority=[SOA], rcode=dns.rcode.NXDOMAIN),
    upstream_reply("nodata.example", "MX", authority=[SOA]),
    upstream_reply(
        "alias.example",
        "A",
        [
            ("alias.example.", 300, "CNAME", "www.blocked.example."),
            ("www.blocked.example.", 300, "A", "198.51.100.66"),
        ],
    ),
    upstream_reply(
        "alias.example",
        "AAAA",
        [
            ("alias.example.", 300, "CNAME", "www.target.example."),
            ("www.target.example.", 300, "AAAA", "2001:db8::66"),
        ],
    ),
    upstream_reply(
        "big.example", "TXT", [("big.example.", 300, "TXT", f'"{"x" * 200}{i}"') for i in range(6)]
    ),
    upstream_reply("expired.example", "A", [("expired.example.", 5, "A", "198.51.100.9")]),
    upstream_reply(
        "noopt.example", "A", [("noopt.example.", 3000, "A", "198.51.100.8")], edns=False
    ),
]


def malformed() -> list[bytes]:
    valid = client_query("www.blocked.example", "A")
    plain = client_query("allowed.example", "A", edns=False)
    out = [valid[:n] for n in range(len(valid))] + [plain[:n] for n in range(len(plain))]
    out.append(valid + b"\x00")  # trailing byte
    out.append(bytearray(valid))
    out[-1][2] |= 0x80  # QR: a response, dropped
    for opcode in (1, 2, 4, 5, 15):
        p = bytearray(plain)
        p[2] = (p[2] & 0x87) | (opcode << 3)
        out.append(bytes(p))
    for counts in ((0, 0, 0, 0), (2, 0, 0, 0), (1, 1, 0, 0), (1, 0, 1, 0), (1, 0, 0, 2)):
        out.append(plain[:4] + struct.pack("!HHHH", *counts) + plain[12:])
    header = plain[:12]
    out.append(header + b"\xc0\x0c\x00\x01\x00\x01")  # compression pointer in the question
    out.append(header + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")  # label over 63
    out.append(header + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01")  # name over 255
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    two_opts = plain[:10] + b"\x00\x02" + plain[12:] + opt + opt
    out.append(two_opts)
    out.append(plain[:10] + b"\x00\x01" + plain[12:] + b"\x01a" + opt)  # OPT owner not root
    out.append(plain[:10] + b"\x00\x01" + plain[12:] + opt[:-2] + b"\x00\x05\x00\x0a\x00\x09")
    tsig_like = b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x02\xab\xcd"
    out.append(plain[:10] + b"\x00\x01" + plain[12:] + tsig_like)  # stepped over
    for seed in range(3):
        for kind in range(7):
            out += make_batch(seed * 7 + kind, [kind])[:300]
    return out


def corpus() -> list[bytes]:
    rng = random.Random(7)
    out = []
    for name in NAMES:
        for rdtype in TYPES:
            for variant in edns_variants():
                out.append(client_query(name, rdtype, qid=rng.randrange(65536), **variant))
        for rdclass in CLASSES[1:]:
            out.append(client_query(name, "A", rdclass=rdclass))
        out.append(client_query(name, "A", rd=False, cd=True))
        out.append(client_query(name, "A", cd=True, do=True, edns=0))
    return out + [bytes(p) for p in malformed()]


class Pair:
    """The same resolver twice: C fast path and pure Python."""

    def __init__(self, tmp_path, **sections) -> None:
        config = make_config(tmp_path, [53], **sections)
        answers = make_answers(config.blocking, "", 0)
        names = upstream_names(config.upstream)
        self.fast = Resolver(config, S.Stats(names), answers, fast=True)
        self.pure = Resolver(config, S.Stats(names), answers, fast=False)
        assert self.fast.fast is not None and self.pure.fast is None
        self.config = config
        self.in_c: dict[bytes, bool] = {}  # answered (or dropped) in C, last time asked
        self.passed: dict[bytes, int] = {}  # why C passed it back (fastpath.PUNT or MISS)

    def set_list(self, domains: list[str], serial: int) -> None:
        state = list_state(domains)
        answers = make_answers(self.config.blocking, AUTHORITY, serial)
        exemptions = Exemptions(self.config.blocking.exempt_names, state)
        self.pure.set_list(Matcher(state), answers, serial, exemptions)
        self.fast.set_list(fastpath.list_index(state), answers, serial, exemptions)

    def store(self, query_wire: bytes, reply: bytes) -> None:
        for r in (self.pure, self.fast):
            q = parse_query(query_wire)
            assert isinstance(q, Query)
            info = inspect_response(reply)
            assert info is not None
            r.store(q, cache_key(q), reply, info, T0)

    def compare(self, packets: list[bytes], allowed: bool) -> None:
        for packet in packets:
            want = self.pure.handle(packet, allowed, True)
            got = self.fast.fast.answer(packet, allowed, NOW)  # type: ignore[union-attr]
            self.in_c[packet] = got.__class__ not in (int, Query)
            if got.__class__ is int:
                self.passed[packet] = got
                got = self.fast.handle_passed(got, packet, allowed)
            elif got.__class__ is Query:  # a miss, parsed in C
                self.passed[packet] = fastpath.MISS
                got = self.fast.handle_passed(fastpath.MISS, got, allowed)
            assert got == want, (packet, allowed)
        self.same_counters()

    def same_counters(self) -> None:
        p, f = self.pure.stats, self.fast.stats
        assert p.totals() == f.totals()
        assert p.blocked_by_entry == f.blocked_by_entry
        assert (p.logged_by_entry, p.logged_other) == (f.logged_by_entry, f.logged_other)
        assert (p.cache_misses, p.truncated, p.internal_errors) == (
            f.cache_misses,
            f.truncated,
            f.internal_errors,
        )
        assert len(self.pure.cache) == len(self.fast.cache)
        assert self.pure.cache.bytes == self.fast.cache.bytes


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setattr(resolver.engine, "time", types.SimpleNamespace(monotonic=lambda: NOW))


@pytest.mark.parametrize("refused", ["refuse", "drop"])
def test_fast_path_gives_the_reference_bytes(tmp_path, clock, refused):
    pair = Pair(tmp_path, acl={"refused": refused})
    packets = corpus()
    pair.compare(packets[:400], True)  # no list yet: listed names are not known
    pair.set_list(LISTED, 1)
    for query_wire, reply in REPLIES:
        pair.store(query_wire, reply)
    pair.compare(packets, True)
    pair.compare(packets[::5], False)  # outside the ACL
    pair.set_list(LISTED_AFTER_SWAP, 2)  # cached answers are re-checked against the new list
    pair.compare(packets, True)

    # Only misses (to forward) and the rare cases named in the next test go back to Python.
    punted = [p for p, r in pair.passed.items() if r == fastpath.PUNT and not pair.in_c[p]]
    for packet in punted:
        q = parse_query(packet)
        assert isinstance(q, Query)
        assert b"\\." in q.qname or (q.qtype == 16 and q.qname == b"big.example"), packet
    assert sum(pair.in_c.values()) > 0.8 * len(pair.in_c)
    # Each kind of answer the C path owns was answered there.
    owned = [
        client_query("www.blocked.example", "A"),  # listed (after the swap: cached)
        client_query("ALLOWED.example", "A", edns=0),  # cached, listed after the swap
        client_query("noopt.example", "A", edns=False),  # cached
        client_query("nodata.example", "MX", edns=0, payload=4096),  # negative, cached
        client_query("allowed.example", "A", edns=1),  # BADVERS
        packets[-1],
    ]
    for packet in owned:
        assert pair.in_c.get(packet, True)


EXEMPT = ["www.blocked.example", "target.example"]  # below a listed name; listed after the swap


@pytest.mark.parametrize(
    "blocking",
    [{"mode": "log-only"}, {"exempt_names": EXEMPT}, {"mode": "log-only", "exempt_names": EXEMPT}],
    ids=["log-only", "exemptions", "both"],
)
def test_log_only_and_exemptions_give_the_reference_bytes(tmp_path, clock, blocking):
    """Blocks that log-only mode or an exemption lift are decided in Python on both paths: the
    same bytes and counters, and every other answer still comes from C."""
    pair = Pair(tmp_path, blocking=blocking)
    packets = corpus()
    pair.set_list(LISTED, 1)
    for query_wire, reply in REPLIES:
        pair.store(query_wire, reply)
    pair.compare(packets, True)
    pair.set_list(LISTED_AFTER_SWAP, 2)
    pair.compare(packets, True)
    stats = pair.fast.stats
    blocked = stats.totals()[0][S.BLOCKED] + stats.totals()[0][S.BLOCKED_CNAME]
    if blocking.get("mode") == "log-only":
        assert blocked == 0 and sum(stats.logged_by_entry.values()) > 100
    else:
        assert blocked > 100 and not stats.logged_by_entry
    if "exempt_names" in blocking:
        # An exempted name is answered (not blocked) alike on both paths; its parent is not.
        for name, listed in (("WwW.BlOcKeD.ExAmPlE", False), ("a.b.c.deep.other.example", True)):
            pair.set_list(LISTED, 3)
            packet = client_query(name, "TXT", qid=9)
            pair.compare([packet], True)
            for r in (pair.pure, pair.fast):
                answered = r.answer_udp(packet, True, NOW).__class__ is bytes  # else forwarded
                assert answered == (listed and blocking.get("mode") != "log-only"), name
            pair.same_counters()
    assert sum(pair.in_c.values()) > 0.5 * len(pair.in_c)


def test_truncation_and_dotted_labels_go_to_python(tmp_path, clock):
    pair = Pair(tmp_path)
    pair.set_list(LISTED, 1)
    for query_wire, reply in REPLIES:
        pair.store(query_wire, reply)
    big = client_query("big.example", "TXT", edns=False)
    dotted = client_query("a\\.b.blocked.example", "A")
    pair.compare([big, dotted], True)
    assert not pair.in_c[big] and not pair.in_c[dotted]
    resp = dns.message.from_wire(pair.fast.answer_udp(big, True, NOW))  # type: ignore[arg-type]
    assert resp.flags & dns.flags.TC


def test_without_list_servfail_is_the_same(tmp_path, clock):
    pair = Pair(tmp_path, server={"without_list": "servfail"})
    pair.compare(corpus()[:300], True)
    assert pair.fast.stats.totals()[0][S.SERVFAIL] > 0


@pytest.mark.parametrize("bound", [{"max_entries": 4}, {"max_bytes": 3000}])
def test_cache_is_bounded_with_lru_eviction(tmp_path, clock, bound):
    """Both caches evict the same entries (least recently used) under either bound."""
    pair = Pair(tmp_path, cache=bound)
    pair.set_list(LISTED, 1)
    for query_wire, reply in REPLIES[:3]:
        pair.store(query_wire, reply)
    pair.compare([client_query("allowed.example", "A")], True)  # the oldest is now the newest
    for query_wire, reply in REPLIES[3:]:
        pair.store(query_wire, reply)
    fast, pure = pair.fast.cache, pair.pure.cache
    assert 0 < len(fast) < len(REPLIES) and fast.evictions == pure.evictions > 0
    assert fast.bytes <= fast.max_bytes and len(fast) <= fast.max_entries
    for key in list(pure._data):  # the same entries, touched in the same order on both
        assert fast.get(key, T0) is not None and pure.get(key, T0) is not None
    pair.compare(corpus(), True)


def test_list_index_matches_the_python_matcher():
    state = list_state(["blocked.example", "deep.other.example"], urls=["blocked.example/"])
    index = fastpath.list_index(state)
    matcher = Matcher(state)
    for name in [b"blocked.example", b"x.y.blocked.example", b"other.example", b"example", b""]:
        assert index.match(name) == matcher.match(name)
    assert index.match_any([b"a.example", b"www.blocked.example"]) == matcher.match_any(
        [b"a.example", b"www.blocked.example"]
    )
    assert len(index) == len(matcher) and index.domains == matcher.domains


def test_embedded_sha256_is_sha256():
    import hashlib

    from resolver import _fastpath

    rng = random.Random(1)
    for n in [*range(130), 255, 1000]:
        data = rng.randbytes(n)
        assert _fastpath.sha256(data) == hashlib.sha256(data).digest()


async def test_serve_says_which_path_runs(tmp_path, caplog):
    write_list(tmp_path, LISTED)
    for on in (True, False):
        caplog.clear()
        config = make_config(tmp_path, [53], server={"fast_path": on})
        with caplog.at_level("INFO", logger="cordon.resolver"):
            async with running(config) as service:
                snap = await service.snapshot()
                assert snap["fast_path"] == (1 if on else 0)
                assert service.resolver.path == ("c" if on else "python")
        text = caplog.text
        assert ("compiled C extension" in text) if on else ("pure-Python path" in text)


def test_hot_path_errors_are_logged_rate_limited_with_traceback(caplog):
    stats = S.Stats([])
    errors = S.ErrorReporter(stats, interval=3600)
    with caplog.at_level("ERROR", logger="cordon.resolver"):
        for _ in range(3):
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                errors.report("UDP query")
    assert stats.internal_errors == 3
    records = [r for r in caplog.records if "unexpected error in UDP query" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "RuntimeError: boom" in caplog.text


async def test_error_in_python_behind_the_fast_path_is_logged_and_answering_goes_on(
    tmp_path, caplog, monkeypatch
):
    """A datagram C passes back makes Python raise: counted, logged with the traceback, the
    next queries are still answered (by C and by Python)."""
    write_list(tmp_path, LISTED)
    config = make_config(tmp_path, [53])
    async with running(config) as service:
        assert service.resolver.fast is not None

        def broken(reason, data, allowed):
            raise RuntimeError("broken on purpose")

        monkeypatch.setattr(service.resolver, "handle_passed", broken)
        with caplog.at_level("ERROR", logger="cordon.resolver"):
            passed = client_query("a\\.b.blocked.example", "A")  # C passes it to Python
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(passed, ("127.0.0.1", service.port))
            # The server's socket queue is FIFO: this answer comes after the broken one ran.
            answer = await ask_raw(service.port, client_query("www.blocked.example", "A"))
        assert answer is not None and dns.message.from_wire(answer).answer
        assert service.stats.internal_errors == 1
        assert "RuntimeError: broken on purpose" in caplog.text
        assert "a.b" not in caplog.text and "127.0.0.1" not in caplog.text  # no query, no client


async def test_missing_extension_falls_back_loudly(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fastpath, "_ext", None)
    monkeypatch.setattr(fastpath, "UNAVAILABLE", "resolver._fastpath is not built (test)")
    write_list(tmp_path, LISTED)
    with caplog.at_level("WARNING", logger="cordon.resolver"):
        async with running(make_config(tmp_path, [53])) as service:
            assert service.resolver.fast is None
            assert (await service.snapshot())["fast_path"] == 0
            answer = await ask_raw(service.port, client_query("www.blocked.example", "A"))
            assert answer is not None and dns.message.from_wire(answer).answer
    assert "UDP fast path unavailable" in caplog.text and "is not built (test)" in caplog.text
