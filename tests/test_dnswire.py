"""Tests for resolver.dnswire: queries in, blocked answers, cached replies, truncation, TCP framing.

dnspython is the independent party: it builds the inputs and parses every output we produce.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.update
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.dnswire import (
    BADVERS,
    EDE_CENSORED,
    EDE_FORGED_ANSWER,
    EDE_PROHIBITED,
    FORMERR,
    MAX_TCP_MESSAGE,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    BlockedAnswers,
    FramingError,
    Query,
    SoaParams,
    TcpDeframer,
    cache_key,
    error_response,
    frame,
    inspect_response,
    name_to_wire,
    parse_query,
    response_for,
    rewrite_response,
    truncate_for_udp,
)

IPV4 = ipaddress.IPv4Address("192.0.2.80")
IPV6 = ipaddress.IPv6Address("2001:db8::80")
TTL = 60
SOA = SoaParams("ns.cordon.example", "hostmaster.cordon.example", 2024010101, 3600, 600, 86400, 30)
EDE_TEXT = "Blocked by order of the Authority; see http://stop.isp.example/ — recours".encode()
NAME = "wWw.BlOcKeD.example"

BOTH = BlockedAnswers(IPV4.packed, IPV6.packed, TTL, SOA, EDE_TEXT)
V4_ONLY = BlockedAnswers(IPV4.packed, None, TTL, SOA, EDE_TEXT)
NO_ADDR = BlockedAnswers(None, None, TTL, SOA, EDE_TEXT)

HEADER = struct.Struct("!HHHHHH")


def query_wire(
    name: str = NAME,
    rdtype: str | int = "A",
    *,
    edns: bool = True,
    do: bool = False,
    payload: int = 1232,
    options: list[dns.edns.Option] | None = None,
    rd: bool = True,
    cd: bool = False,
) -> bytes:
    msg = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=payload)
    if edns and do:
        msg.want_dnssec(True)
    if options:
        msg.use_edns(0, msg.ednsflags, payload, options=options)
    if not rd:
        msg.flags &= ~dns.flags.RD
    if cd:
        msg.flags |= dns.flags.CD
    return msg.to_wire()


def parsed(wire: bytes) -> Query:
    query = parse_query(wire)
    assert isinstance(query, Query), query
    return query


def ede_codes(msg: dns.message.Message) -> list[tuple[int, str | None]]:
    return [(int(opt.code), opt.text) for opt in msg.options if isinstance(opt, dns.edns.EDEOption)]


def header(wire: bytes) -> tuple[int, ...]:
    return HEADER.unpack_from(wire)


# ---------------------------------------------------------------------------------------------
# parse_query on valid queries


def test_parse_query_fields_and_0x20_case() -> None:
    wire = query_wire(do=True, payload=1400)
    query = parsed(wire)
    assert query.id == header(wire)[0]
    assert query.flags == header(wire)[1]
    assert (query.opcode, query.rd, query.cd) == (0, True, False)
    assert query.qname_wire == b"\x03wWw\x07BlOcKeD\x07example\x00"
    assert query.qname == b"www.blocked.example"
    assert (query.qtype, query.qclass) == (1, 1)
    assert query.question == query.qname_wire + b"\x00\x01\x00\x01"
    assert wire[12 : 12 + len(query.question)] == query.question
    assert (query.edns, query.udp_size, query.do, query.edns_version) == (True, 1400, True, 0)


@pytest.mark.parametrize(
    ("edns", "payload", "expected"),
    [(False, 0, 512), (True, 100, 512), (True, 512, 512), (True, 4096, 4096), (True, 65000, 4096)],
)
def test_udp_size_is_clamped(edns: bool, payload: int, expected: int) -> None:
    query = parsed(query_wire(edns=edns, payload=payload))
    assert query.udp_size == expected
    assert query.edns is edns


def test_root_and_longest_names() -> None:
    root = parsed(query_wire(".", "NS"))
    assert (root.qname, root.qname_wire) == (b"", b"\x00")
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61
    query = parsed(query_wire(longest))
    assert len(query.qname_wire) == 255
    assert query.qname == longest.encode()


def test_dot_inside_a_label_is_escaped_and_keyed_apart() -> None:
    odd = HEADER.pack(7, 0x0100, 1, 0, 0, 0) + b"\x03a.b\x07example\x00\x00\x01\x00\x01"
    plain = HEADER.pack(7, 0x0100, 1, 0, 0, 0) + b"\x01a\x01b\x07example\x00\x00\x01\x00\x01"
    assert parsed(odd).qname == b"a\\.b.example"
    assert parsed(plain).qname == b"a.b.example"
    assert cache_key(parsed(odd)) != cache_key(parsed(plain))


def test_unknown_additional_records_and_options_are_skipped() -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 40)
    query = parsed(query_wire(options=[cookie, padding], do=True))
    assert query.edns and query.do
    # An extra record after the OPT, owner compressed (as TSIG owners may be): stepped over.
    base = query_wire()
    qid, flags, qd, an, ns, ar = header(base)
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 250, 255, 0, 3) + b"abc"
    query = parsed(HEADER.pack(qid, flags, qd, an, ns, ar + 1) + base[12:] + extra)
    assert query.edns and query.qname == b"www.blocked.example"


def test_cache_key_folds_case_and_separates_do_cd_type_class() -> None:
    key = cache_key(parsed(query_wire("WwW.bLoCkEd.EXAMPLE")))
    assert key == cache_key(parsed(query_wire("www.blocked.example")))
    others = {
        cache_key(parsed(query_wire(do=True))),
        cache_key(parsed(query_wire(cd=True))),
        cache_key(parsed(query_wire(rdtype="AAAA"))),
        cache_key(parsed(dns.message.make_query(NAME, "A", rdclass="CH").to_wire())),
    }
    assert key not in others and len(others) == 4
    hash(key)


# ---------------------------------------------------------------------------------------------
# Answers for listed names


def check_common(resp: bytes, wire: bytes, answers: BlockedAnswers) -> dns.message.Message:
    """Checks every blocked answer must pass; returns dnspython's reading of it."""
    query = parsed(wire)
    msg = dns.message.from_wire(resp)
    assert msg.id == query.id
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RA
    assert not msg.flags & (dns.flags.AA | dns.flags.TC | dns.flags.AD)
    assert bool(msg.flags & dns.flags.RD) == query.rd
    assert bool(msg.flags & dns.flags.CD) == query.cd
    assert msg.rcode() == dns.rcode.NOERROR
    assert resp[12 : 12 + len(query.question)] == query.question  # byte for byte, case included
    assert msg.question[0].name.to_text() == NAME + "."
    if query.edns:
        assert msg.edns == 0 and msg.payload == 1232
        assert bool(msg.ednsflags & dns.flags.DO) == query.do
    else:
        assert msg.edns == -1 and not msg.options
    return msg


def test_blocked_a_answer_spelled_out_byte_for_byte() -> None:
    """The answer for a listed name, written out from RFC 1035, RFC 6891 and RFC 8914."""
    query = dns.message.make_query(NAME, "A", use_edns=0, payload=1232)
    query.id = 0x1234
    question = b"\x03wWw\x07BlOcKeD\x07example\x00" + b"\x00\x01\x00\x01"  # case kept
    expected = (
        bytes.fromhex("1234 8180 0001 0001 0000 0001")  # id; QR RD RA; 1 question, answer, extra
        + question
        + bytes.fromhex("c00c 0001 0001 0000003c 0004")  # A IN, TTL 60, 4 bytes
        + IPV4.packed
        + bytes.fromhex("00 0029 04d0 00000000")  # OPT at the root: payload 1232, DO clear
        + struct.pack("!H", 6 + 6 + len(EDE_TEXT))  # RDLENGTH: two EDE options
        + bytes.fromhex("000f 0002 0004")  # EDE 4 (Forged Answer), no text
        + bytes.fromhex("000f")  # EDE ...
        + struct.pack("!HH", 2 + len(EDE_TEXT), 16)  # ... 16 (Censored) with EXTRA-TEXT
        + EDE_TEXT
    )
    assert BOTH.build(parsed(query.to_wire())) == expected


def assert_nodata(msg: dns.message.Message) -> None:
    assert not msg.answer
    assert len(msg.authority) == 1
    soa = msg.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.name == dns.name.from_text(NAME)
    assert soa.ttl == min(TTL, SOA.minimum)
    assert len(soa) == 1
    rd = soa[0]
    assert rd.mname.to_text() == SOA.mname + "." and rd.rname.to_text() == SOA.rname + "."
    assert (rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum) == tuple(SOA[2:])


def assert_address(msg: dns.message.Message, rdtype: int, address: str) -> None:
    assert not msg.authority and len(msg.answer) == 1
    rrset = msg.answer[0]
    assert rrset.rdtype == rdtype and rrset.ttl == TTL and len(rrset) == 1
    assert rrset.name.to_text() == NAME + "."  # compression pointer to the client's casing
    assert rrset[0].address == address


@pytest.mark.parametrize(("edns", "do"), [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize(
    "rdtype", ["A", "AAAA", "HTTPS", "SVCB", "MX", "TXT", "CNAME", "NS", "SOA", "ANY", "DS"]
)
def test_blocked_answers(rdtype: str, edns: bool, do: bool) -> None:
    wire = query_wire(rdtype=rdtype, edns=edns, do=do)
    query = parsed(wire)
    for answers, v4, v6 in ((BOTH, True, True), (V4_ONLY, True, False), (NO_ADDR, False, False)):
        msg = check_common(answers.build(query), wire, answers)
        forged = (rdtype in ("A", "ANY") and v4) or (rdtype == "AAAA" and v6)
        if rdtype in ("A", "ANY") and v4:
            assert_address(msg, dns.rdatatype.A, str(IPV4))
        elif rdtype == "AAAA" and v6:
            assert_address(msg, dns.rdatatype.AAAA, str(IPV6))
        else:
            assert_nodata(msg)
        if edns:
            expected = [(EDE_CENSORED, EDE_TEXT.decode())]
            if forged:
                expected.insert(0, (EDE_FORGED_ANSWER, None))
            assert ede_codes(msg) == expected


@pytest.mark.parametrize(("rd", "cd"), [(False, False), (False, True), (True, True)])
def test_blocked_answer_copies_rd_and_cd(rd: bool, cd: bool) -> None:
    wire = query_wire(rd=rd, cd=cd, do=True)
    check_common(BOTH.build(parsed(wire)), wire, BOTH)


def test_blocked_answer_for_non_in_class_is_a_refusal() -> None:
    wire = dns.message.make_query(NAME, "TXT", rdclass="CH", use_edns=0).to_wire()
    msg = dns.message.from_wire(BOTH.build(parsed(wire)))
    assert msg.rcode() == dns.rcode.REFUSED and not msg.answer
    assert ede_codes(msg) == [(EDE_CENSORED, EDE_TEXT.decode())]


def test_blocked_answers_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        BlockedAnswers(b"\x01\x02\x03", None, TTL, SOA, b"")
    with pytest.raises(ValueError):
        BlockedAnswers(None, IPV4.packed, TTL, SOA, b"")
    with pytest.raises(ValueError):
        BlockedAnswers(None, None, -1, SOA, b"")
    with pytest.raises(ValueError):
        BlockedAnswers(None, None, TTL, SOA, b"\xff\xfe")  # not UTF-8
    with pytest.raises(ValueError):
        BlockedAnswers(None, None, TTL, SOA, b"x" * 256)
    with pytest.raises(ValueError):
        BlockedAnswers(None, None, TTL, SOA._replace(mname="a..example"), b"")
    with pytest.raises(ValueError):
        BlockedAnswers(None, None, TTL, SOA._replace(serial=2**32), b"")


def test_name_to_wire() -> None:
    assert name_to_wire("") == name_to_wire(".") == b"\x00"
    assert name_to_wire("Stop.Example.") == b"\x04Stop\x07Example\x00"
    with pytest.raises(ValueError):
        name_to_wire("a" * 64 + ".example")
    with pytest.raises(ValueError):
        name_to_wire(".".join(["a" * 63] * 4))


# ---------------------------------------------------------------------------------------------
# Malformed queries


def with_header(wire: bytes, **fields: int) -> bytes:
    names = ("id", "flags", "qd", "an", "ns", "ar")
    values = dict(zip(names, header(wire), strict=True))
    values.update(fields)
    return HEADER.pack(*(values[n] for n in names)) + wire[12:]


def opt_rr(
    owner: bytes = b"\x00", *, payload: int = 1232, ttl: int = 0, rdata: bytes = b""
) -> bytes:
    return owner + struct.pack("!HHIH", 41, payload, ttl, len(rdata)) + rdata


PLAIN = query_wire(edns=False)
QUESTION = PLAIN[12:]
PLAIN_ID, PLAIN_FLAGS = header(PLAIN)[:2]


def raw_query(
    question: bytes = QUESTION, *, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return HEADER.pack(PLAIN_ID, PLAIN_FLAGS, qd, an, ns, ar) + question


MALFORMED_FORMERR = {
    "qdcount 0": raw_query(b"", qd=0),
    "qdcount 0 with bytes": raw_query(qd=0),
    "qdcount 2": raw_query(QUESTION + QUESTION, qd=2),
    "ancount 1": raw_query(
        QUESTION + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04", an=1
    ),
    "nscount 1": raw_query(
        QUESTION + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04", ns=1
    ),
    "truncated name": raw_query(b"\x03wWw\x07BlOc"),
    "name without root": raw_query(b"\x03wWw"),
    "truncated type": raw_query(QUESTION[:-3]),
    "pointer in question": raw_query(b"\xc0\x0c\x00\x01\x00\x01"),
    "pointer after a label": raw_query(b"\x03www\xc0\x0c\x00\x01\x00\x01"),
    "label length 64": raw_query(b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"),
    "label type 0x80": raw_query(b"\x80" + b"a" * 10 + b"\x00\x00\x01\x00\x01"),
    "name over 255": raw_query((b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01"),
    "trailing garbage": PLAIN + b"\x00",
    "arcount without records": raw_query(ar=1),
    "opt rdata past end": raw_query(QUESTION + opt_rr(rdata=b"\x00\x0a\x00\x08")[:-2], ar=1),
    "opt option overruns rdata": raw_query(QUESTION + opt_rr(rdata=b"\x00\x0a\x00\x08abcd"), ar=1),
    "opt option header cut": raw_query(QUESTION + opt_rr(rdata=b"\x00\x0a\x00"), ar=1),
    "opt non-root owner": raw_query(QUESTION + opt_rr(b"\x01a\x00"), ar=1),
    "opt compressed owner": raw_query(QUESTION + opt_rr(b"\xc0\x0c"), ar=1),
    "two opts": raw_query(QUESTION + opt_rr() + opt_rr(), ar=2),
    "opt plus garbage": raw_query(QUESTION + opt_rr() + b"\x00\x00", ar=1),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FORMERR))
def test_malformed_queries_get_formerr(case: str) -> None:
    wire = MALFORMED_FORMERR[case]
    assert parse_query(wire) == FORMERR
    reply = error_response(wire, FORMERR)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == PLAIN_ID and msg.rcode() == dns.rcode.FORMERR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RA and msg.flags & dns.flags.RD
    assert not msg.answer and not msg.authority


def test_formerr_echoes_parsable_question_and_opt() -> None:
    # Parsable question and OPT, refused for trailing garbage: both are echoed.
    wire = query_wire(do=True) + b"junk"
    assert parse_query(wire) == FORMERR
    msg = dns.message.from_wire(error_response(wire, FORMERR))
    assert msg.question[0].name.to_text() == NAME + "."
    assert msg.edns == 0 and msg.ednsflags & dns.flags.DO
    # Unparsable question: QDCOUNT 0, no OPT.
    msg = dns.message.from_wire(error_response(MALFORMED_FORMERR["pointer in question"], FORMERR))
    assert not msg.question and msg.edns == -1
    # Two questions: not echoed.
    reply = error_response(MALFORMED_FORMERR["qdcount 2"], FORMERR)
    assert header(reply)[2:] == (0, 0, 0, 0)
    # OPT with a non-root owner is not an OPT we can answer with.
    reply = error_response(MALFORMED_FORMERR["opt non-root owner"], FORMERR)
    assert header(reply)[2:] == (1, 0, 0, 0)


@pytest.mark.parametrize("data", [b"", b"\x00" * 11, b"\x12\x34\x01"])
def test_short_packets_are_dropped(data: bytes) -> None:
    assert parse_query(data) is None
    assert error_response(data, FORMERR) is None


def test_responses_are_never_answered() -> None:
    wire = with_header(query_wire(), flags=0x8180)
    assert parse_query(wire) is None
    assert error_response(wire, FORMERR) is None
    assert parse_query(with_header(PLAIN, flags=0x8000, qd=0)) is None


def test_edns_version_1_gets_badvers() -> None:
    msg = dns.message.make_query(NAME, "A", use_edns=1, want_dnssec=True)
    wire = msg.to_wire()
    assert parse_query(wire) == BADVERS
    reply = error_response(wire, BADVERS)
    out = dns.message.from_wire(reply)
    assert out.rcode() == dns.rcode.BADVERS
    assert out.edns == 0 and out.ednsflags & dns.flags.DO
    assert header(reply)[1] & 0xF == 0  # the low bits alone would read NOERROR
    assert out.question[0].name.to_text() == NAME + "."


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY, 3])
def test_other_opcodes_get_notimp(opcode: int) -> None:
    if opcode == dns.opcode.UPDATE:
        wire = dns.update.UpdateMessage("blocked.example.").to_wire()
    else:
        msg = dns.message.make_query(NAME, "SOA")
        msg.set_opcode(opcode)
        wire = msg.to_wire()
    assert parse_query(wire) == NOTIMP
    reply = error_response(wire, NOTIMP)
    assert reply is not None
    assert (header(reply)[1] >> 11) & 0xF == opcode
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.NOTIMP and msg.opcode() == opcode
    assert header(reply)[2] == 1  # the zone/question is echoed


def test_error_response_extended_rcode_without_opt_falls_back_to_servfail() -> None:
    reply = error_response(PLAIN, BADVERS)
    assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL


def test_response_for_refused_and_servfail() -> None:
    query = parsed(query_wire(do=True, cd=True))
    msg = dns.message.from_wire(
        response_for(query, REFUSED, ede_code=EDE_PROHIBITED, ede_text=b"not a client")
    )
    assert msg.id == query.id and msg.rcode() == dns.rcode.REFUSED
    assert msg.flags & dns.flags.CD and msg.flags & dns.flags.RD
    assert ede_codes(msg) == [(EDE_PROHIBITED, "not a client")]
    assert msg.ednsflags & dns.flags.DO
    assert msg.question[0].name.to_text() == NAME + "."
    plain = parsed(PLAIN)
    reply = response_for(plain, SERVFAIL, ede_code=EDE_PROHIBITED)
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.SERVFAIL and msg.edns == -1
    assert reply == HEADER.pack(plain.id, 0x8182, 1, 0, 0, 0) + plain.question
    assert dns.message.from_wire(response_for(plain, BADVERS)).rcode() == dns.rcode.SERVFAIL
    assert dns.message.from_wire(response_for(query, BADVERS)).rcode() == dns.rcode.BADVERS


# ---------------------------------------------------------------------------------------------
# Upstream responses


Records = Sequence[tuple[str, int, str, list[str]]]


def upstream(
    qname: str = "www.example.com",
    rdtype: str = "A",
    *,
    answer: Records = (),
    authority: Records = (),
    additional: Records = (),
    rcode: int = dns.rcode.NOERROR,
    edns: bool = True,
) -> bytes:
    query = dns.message.make_query(qname, rdtype, use_edns=0 if edns else False)
    resp = dns.message.make_response(query)
    resp.set_rcode(rcode)
    for section, records in (
        (resp.answer, answer),
        (resp.authority, authority),
        (resp.additional, additional),
    ):
        for name, ttl, rtype, rdatas in records:
            section.append(dns.rrset.from_text_list(name, ttl, "IN", rtype, rdatas))
    return resp.to_wire()


SOA_TEXT = "ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 300"
CHAIN = upstream(
    answer=[
        ("www.example.com.", 300, "CNAME", ["cdn.example.net."]),
        ("cdn.example.net.", 120, "CNAME", ["edge.cdn.example.net."]),
        ("edge.cdn.example.net.", 60, "A", ["192.0.2.1", "192.0.2.2"]),
    ],
    authority=[("example.net.", 3600, "NS", ["ns1.example.net.", "ns2.example.net."])],
    additional=[("ns1.example.net.", 3600, "A", ["198.51.100.1"])],
)


def ttls(wire: bytes, offsets: tuple[int, ...]) -> list[int]:
    return [struct.unpack_from("!I", wire, off)[0] for off in offsets]


def test_inspect_cname_chain() -> None:
    info = inspect_response(CHAIN)
    assert info is not None
    assert (info.rcode, info.tc, info.negative) == (0, False, False)
    assert (info.qname, info.qtype, info.qclass) == (b"www.example.com", 1, 1)
    assert info.answer_owners == (b"www.example.com", b"cdn.example.net", b"edge.cdn.example.net")
    assert info.cname_targets == (b"cdn.example.net", b"edge.cdn.example.net")
    assert info.ttl == 60
    assert ttls(CHAIN, info.ttl_offsets) == [300, 120, 60, 60, 3600, 3600, 3600]
    assert info.opt_start > 0 and info.opt_end == len(CHAIN)
    assert CHAIN[info.opt_start : info.opt_start + 3] == b"\x00\x00\x29"
    assert info.question_end == 12 + len(name_to_wire("www.example.com")) + 4


def test_rewrite_sets_id_client_question_and_ages_ttls() -> None:
    info = inspect_response(CHAIN)
    assert info is not None
    client = parsed(query_wire("WwW.ExAmPlE.CoM", edns=True))
    out = rewrite_response(CHAIN, info, client.id, client.question, 100)
    assert len(out) == len(CHAIN)
    msg = dns.message.from_wire(out)
    assert msg.id == client.id
    assert msg.question[0].name.to_text() == "WwW.ExAmPlE.CoM."
    assert [rrset.ttl for rrset in msg.answer] == [200, 20, 0]
    assert [rrset.ttl for rrset in msg.authority + msg.additional] == [3500, 3500]
    assert ttls(out, info.ttl_offsets) == [200, 20, 0, 0, 3500, 3500, 3500]
    # Age 0 changes only id and question; huge or negative ages floor at 0 / change nothing.
    same = rewrite_response(CHAIN, info, client.id, client.question, 0)
    assert same[12:] == client.question + CHAIN[info.question_end :]
    assert (
        ttls(rewrite_response(CHAIN, info, 1, client.question, 10**9), info.ttl_offsets) == [0] * 7
    )
    assert (
        rewrite_response(CHAIN, info, 1, client.question, -5)[info.question_end :]
        == CHAIN[info.question_end :]
    )


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [("www.example.org.uk", "A"), ("www.example.con", "A"), ("www.example.com", "AAAA")],
)
def test_rewrite_refuses_another_question(name: str, rdtype: str) -> None:
    info = inspect_response(CHAIN)
    assert info is not None
    with pytest.raises(ValueError):
        rewrite_response(CHAIN, info, 1, parsed(query_wire(name, rdtype)).question, 0)


def test_rewrite_does_not_fold_type_bytes() -> None:
    # HTTPS is type 65 (0x0041), which bytes.lower() would turn into type 97 (0x0061).
    wire = upstream(rdtype="HTTPS", authority=[("example.com.", 60, "SOA", [SOA_TEXT])])
    info = inspect_response(wire)
    assert info is not None and info.qtype == 65
    other = wire[12 : info.question_end - 4] + b"\x00\x61\x00\x01"
    with pytest.raises(ValueError):
        rewrite_response(wire, info, 1, other, 0)


def test_rewrite_can_drop_the_opt_for_non_edns_clients() -> None:
    info = inspect_response(CHAIN)
    assert info is not None
    client = parsed(query_wire("www.example.com", edns=False))
    out = rewrite_response(CHAIN, info, client.id, client.question, 5, keep_opt=False)
    msg = dns.message.from_wire(out)
    assert msg.edns == -1 and len(msg.additional) == 1
    assert header(out)[5] == header(CHAIN)[5] - 1
    assert [rrset.ttl for rrset in msg.answer] == [295, 115, 55]


def test_high_bit_ttls_count_as_zero() -> None:
    wire = bytearray(upstream(answer=[("www.example.com.", 60, "A", ["192.0.2.1"])]))
    info = inspect_response(bytes(wire))
    assert info is not None
    struct.pack_into("!I", wire, info.ttl_offsets[0], 0x80000001)
    info = inspect_response(bytes(wire))
    assert info is not None and info.ttl == 0
    assert ttls(
        rewrite_response(bytes(wire), info, 1, wire[12 : info.question_end], 1), info.ttl_offsets
    ) == [0]


@pytest.mark.parametrize(
    ("soa_ttl", "expected"),
    [(900, 300), (100, 100)],  # min(SOA TTL, SOA MINIMUM)
)
def test_nxdomain_negative_ttl(soa_ttl: int, expected: int) -> None:
    wire = upstream(
        rcode=dns.rcode.NXDOMAIN, authority=[("example.com.", soa_ttl, "SOA", [SOA_TEXT])]
    )
    info = inspect_response(wire)
    assert info is not None
    assert (info.rcode, info.negative, info.ttl) == (3, True, expected)
    assert info.answer_owners == () and info.cname_targets == ()


def test_nodata_negative_ttl_and_cname_bound() -> None:
    wire = upstream(rdtype="AAAA", authority=[("example.com.", 3600, "SOA", [SOA_TEXT])])
    info = inspect_response(wire)
    assert info is not None and (info.rcode, info.negative, info.ttl) == (0, True, 300)
    # CNAME then NXDOMAIN: the chain's own TTL bounds the negative one.
    wire = upstream(
        rcode=dns.rcode.NXDOMAIN,
        answer=[("www.example.com.", 50, "CNAME", ["gone.example.org."])],
        authority=[("example.org.", 3600, "SOA", [SOA_TEXT])],
    )
    info = inspect_response(wire)
    assert info is not None and (info.negative, info.ttl) == (True, 50)
    assert info.cname_targets == (b"gone.example.org",)
    # CNAME to a name with no record of the asked type (NODATA after a CNAME).
    wire = upstream(
        answer=[("www.example.com.", 500, "CNAME", ["v4only.example.org."])],
        authority=[("example.org.", 3600, "SOA", [SOA_TEXT])],
        rdtype="AAAA",
    )
    info = inspect_response(wire)
    assert info is not None and (info.negative, info.ttl) == (True, 300)


def test_no_soa_means_no_negative_ttl_and_servfail_is_reported() -> None:
    info = inspect_response(upstream(rdtype="AAAA"))
    assert info is not None and info.negative and info.ttl is None
    info = inspect_response(upstream(rcode=dns.rcode.SERVFAIL, edns=False))
    assert info is not None and (info.rcode, info.ttl, info.negative) == (2, None, False)
    assert info.opt_start == -1 and info.ttl_offsets == ()


def test_extended_rcode_and_tc_are_reported() -> None:
    msg = dns.message.make_response(dns.message.make_query("www.example.com", "A", use_edns=0))
    msg.set_rcode(dns.rcode.BADCOOKIE)
    msg.flags |= dns.flags.TC
    info = inspect_response(msg.to_wire())
    assert info is not None and info.rcode == dns.rcode.BADCOOKIE and info.tc


def test_any_answer_counts_as_answered() -> None:
    wire = upstream(
        rdtype="ANY",
        answer=[
            ("www.example.com.", 30, "A", ["192.0.2.1"]),
            ("www.example.com.", 40, "TXT", ['"x"']),
        ],
    )
    info = inspect_response(wire)
    assert info is not None and not info.negative and info.ttl == 30
    assert info.answer_owners == (b"www.example.com",)


# Handcrafted responses: header, question www.example.com A, then records.
RESP_Q = name_to_wire("www.example.com") + b"\x00\x01\x00\x01"


def raw_response(
    records: bytes, an: int, ns: int = 0, ar: int = 0, qd: int = 1, q: bytes = RESP_Q
) -> bytes:
    return HEADER.pack(0x4242, 0x8180, qd, an, ns, ar) + q + records


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 60) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


A_RDATA = b"\xc0\x00\x02\x01"


def test_handcrafted_compression_is_followed() -> None:
    # CNAME target "edge" + pointer to "example.com" inside the question (offset 12 + 4);
    # the A record's owner points at that target (RDATA of RR1 starts at 0x2D).
    wire = raw_response(rr(b"\xc0\x0c", 5, b"\x04edge\xc0\x10") + rr(b"\xc0\x2d", 1, A_RDATA), 2)
    assert wire[0x2D : 0x2D + 5] == b"\x04edge"
    info = inspect_response(wire)
    assert info is not None
    assert info.cname_targets == (b"edge.example.com",)
    assert info.answer_owners == (b"www.example.com", b"edge.example.com")
    assert dns.message.from_wire(wire).answer[1].name.to_text() == "edge.example.com."


REJECTED_RESPONSES = {
    "pointer to itself": raw_response(rr(b"\xc0\x21", 1, A_RDATA), 1),
    "forward pointer": raw_response(rr(b"\xc0\x30", 1, A_RDATA) + rr(b"\xc0\x0c", 1, A_RDATA), 2),
    "label then pointer to its own start": raw_response(rr(b"\x01a\xc0\x21", 1, A_RDATA), 1),
    # Owner of RR2 points at RR1's owner, which points at RR2's owner: a two-step loop.
    "two-step loop": raw_response(
        rr(b"\x01a\xc0\x33", 1, A_RDATA) + rr(b"\xc0\x21", 1, A_RDATA), 2
    ),
    "pointer into header": raw_response(rr(b"\xc0\x02", 1, A_RDATA), 1),
    "pointer past end": raw_response(rr(b"\xff\xff", 1, A_RDATA), 1),
    "compressed question": raw_response(b"", 0, q=b"\xc0\x0c\x00\x01\x00\x01"),
    "label type 0x40": raw_response(rr(b"\x41a\x00", 1, A_RDATA), 1),
    "rdata past end": raw_response(rr(b"\xc0\x0c", 1, A_RDATA)[:-1], 1),
    "count beyond records": raw_response(rr(b"\xc0\x0c", 1, A_RDATA), 2),
    "trailing garbage": raw_response(rr(b"\xc0\x0c", 1, A_RDATA) + b"\x00", 1),
    "cname target overruns rdata": raw_response(
        rr(b"\xc0\x0c", 5, b"\x04edge\xc0\x10")[:-8] + b"\x00\x03\x04edge\xc0\x10", 1
    ),
    "cname target short of rdata": raw_response(rr(b"\xc0\x0c", 5, b"\x04edge\xc0\x10\x00"), 1),
    "soa too short": raw_response(rr(b"\xc0\x10", 6, b"\x00\x00" + b"\x00" * 19), 0, ns=1),
    "opt in answer": raw_response(opt_rr(), 1),
    "opt twice": raw_response(opt_rr() + opt_rr(), 0, ar=2),
    "opt non-root owner": raw_response(opt_rr(b"\xc0\x0c"), 0, ar=1),
    "no question": raw_response(b"", 0, qd=0, q=b""),
    "two questions": raw_response(RESP_Q, 0, qd=2),
    "not a response": HEADER.pack(1, 0x0100, 1, 0, 0, 0) + RESP_Q,
    "short": b"\x00" * 11,
    "name over 255 via pointers": raw_response(
        rr(b"\xc0\x0c", 0xFF00, (b"\x3f" + b"a" * 63) * 4 + b"\xc0\x0c")
        + rr(b"\xc0\x2d", 1, A_RDATA),
        2,
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED_RESPONSES))
def test_malformed_responses_are_rejected(case: str) -> None:
    assert inspect_response(REJECTED_RESPONSES[case]) is None


def pointer_chain_response(links: int) -> bytes:
    """RR1 holds opaque RDATA with a chain of `links` pointers, each to the one before; RR2's
    owner points at the last, so reading it takes links + 2 hops down to the question name."""
    rdata_start = 12 + len(RESP_Q) + 2 + 10
    chain = bytearray(b"\xc0\x0c")
    for i in range(1, links):
        chain += struct.pack("!H", 0xC000 | (rdata_start + 2 * (i - 1)))
    last = rdata_start + 2 * (links - 1)
    return raw_response(
        rr(b"\xc0\x0c", 0xFF00, bytes(chain)) + rr(struct.pack("!H", 0xC000 | last), 1, A_RDATA), 2
    )


def test_pointer_hop_limit() -> None:
    ok = inspect_response(pointer_chain_response(127))  # 128 hops
    assert ok is not None and ok.answer_owners == (b"www.example.com",)
    assert inspect_response(pointer_chain_response(128)) is None  # 129 hops


def test_every_truncation_of_a_valid_response_is_rejected() -> None:
    for size in range(len(CHAIN)):
        assert inspect_response(CHAIN[:size]) is None


# ---------------------------------------------------------------------------------------------
# Truncation and TCP framing


def big_response(edns: bool) -> tuple[bytes, bytes]:
    query = dns.message.make_query(NAME, "A", use_edns=0 if edns else False)
    resp = dns.message.make_response(query)
    resp.answer.append(
        dns.rrset.from_text_list(
            NAME + ".", 60, "IN", "A", [f"10.0.{i // 256}.{i % 256}" for i in range(200)]
        )
    )
    return query.to_wire(), resp.to_wire(max_size=65535)


@pytest.mark.parametrize("edns", [True, False])
def test_truncate_for_udp(edns: bool) -> None:
    qwire, wire = big_response(edns)
    query = parsed(qwire)
    assert len(wire) > 1232
    out = truncate_for_udp(wire, query.udp_size)
    assert len(out) <= query.udp_size
    msg = dns.message.from_wire(out)
    assert msg.flags & dns.flags.TC and msg.id == query.id
    assert not msg.answer and not msg.authority and not msg.additional
    assert msg.question[0].name.to_text() == NAME + "."
    assert msg.edns == (0 if edns else -1)
    assert header(out)[2:] == (1, 0, 0, 1 if edns else 0)
    assert truncate_for_udp(wire, 65535) is wire
    assert len(truncate_for_udp(wire, 100)) <= 512  # never below 512
    small = BOTH.build(query)
    assert truncate_for_udp(small, 512) is small


def test_frame_and_limits() -> None:
    assert frame(PLAIN) == struct.pack("!H", len(PLAIN)) + PLAIN
    assert len(frame(b"x" * MAX_TCP_MESSAGE)) == MAX_TCP_MESSAGE + 2
    with pytest.raises(ValueError):
        frame(b"x" * (MAX_TCP_MESSAGE + 1))


def test_deframer_split_and_merged_chunks() -> None:
    messages = [PLAIN, query_wire(do=True), b"\x00" * MAX_TCP_MESSAGE, query_wire("x.example")]
    stream = b"".join(frame(m) for m in messages)
    for size in (1, 2, 3, 7, 500, 70000, len(stream)):
        deframer = TcpDeframer()
        out: list[bytes] = []
        for i in range(0, len(stream), size):
            out.extend(deframer.feed(stream[i : i + size]))
        assert out == messages and deframer.pending == 0
    deframer = TcpDeframer()
    assert deframer.feed(frame(PLAIN)[:-1]) == [] and deframer.pending == len(PLAIN) + 1


@pytest.mark.parametrize("length", [0, 1, 11])
def test_deframer_refuses_impossible_lengths(length: int) -> None:
    deframer = TcpDeframer()
    with pytest.raises(FramingError):
        deframer.feed(frame(PLAIN) + struct.pack("!H", length) + b"\x00" * length)
    with pytest.raises(FramingError):  # and stays refused
        deframer.feed(frame(PLAIN))


# ---------------------------------------------------------------------------------------------
# Fuzzing: nothing we are sent may raise


def check_query_handling(data: bytes) -> None:
    result = parse_query(data)
    if isinstance(result, Query):
        dns.message.from_wire(BOTH.build(result))
        NO_ADDR.build(result)
        response_for(result, REFUSED, ede_code=EDE_PROHIBITED)
        cache_key(result)
        assert result.question == data[12 : 12 + len(result.question)]
    else:
        assert result in (None, FORMERR, NOTIMP, BADVERS)
        reply = error_response(data, FORMERR if result is None else result)
        assert (reply is None) == (result is None)
        # dnspython insists that an UPDATE's zone section has type SOA: check those by hand.
        if reply is not None and (header(reply)[1] >> 11) & 0xF != dns.opcode.UPDATE:
            dns.message.from_wire(reply)
        elif reply is not None:
            assert header(reply)[0] == header(data)[0] and header(reply)[1] & 0x8000


def check_response_handling(data: bytes) -> None:
    info = inspect_response(data)
    if info is not None:
        assert all(12 <= off <= len(data) - 4 for off in info.ttl_offsets)
        out = rewrite_response(data, info, 0xBEEF, data[12 : info.question_end], 7)
        assert len(out) == len(data)
        rewrite_response(data, info, 1, data[12 : info.question_end], 0, keep_opt=False)
    truncate_for_udp(data, 512)


SEED_QUERIES = [
    PLAIN,
    query_wire(do=True),
    query_wire("a.b.c.d.example", "HTTPS", options=[dns.edns.GenericOption(10, b"\x01" * 8)]),
    query_wire(".", "NS", edns=False),
    MALFORMED_FORMERR["two opts"],
]
SEED_RESPONSES = [
    CHAIN,
    upstream(rcode=dns.rcode.NXDOMAIN, authority=[("example.com.", 900, "SOA", [SOA_TEXT])]),
    REJECTED_RESPONSES["pointer to itself"],
    raw_response(rr(b"\xc0\x0c", 5, b"\x04edge\xc0\x10") + rr(b"\xc0\x2d", 1, A_RDATA), 2),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_query_handling(data)
    check_response_handling(data)
    # Random bytes behind a plausible header reach the deeper code paths.
    check_query_handling(HEADER.pack(1, 0x0100, 1, 0, 0, 1) + data)
    check_response_handling(HEADER.pack(1, 0x8180, 1, 2, 1, 1) + data)


@FUZZ
@given(mutated(SEED_QUERIES))
def test_fuzz_mutated_queries(data: bytes) -> None:
    check_query_handling(data)


@FUZZ
@given(mutated(SEED_RESPONSES))
def test_fuzz_mutated_responses(data: bytes) -> None:
    check_response_handling(data)


LABEL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(
    labels=st.lists(LABEL, min_size=0, max_size=6),
    rdtype=st.sampled_from([1, 2, 5, 6, 15, 16, 28, 33, 64, 65, 255, 4242]),
    edns=st.booleans(),
    do=st.booleans(),
    payload=st.integers(0, 65535),
)
def test_parse_query_agrees_with_dnspython(
    labels: list[str], rdtype: int, edns: bool, do: bool, payload: int
) -> None:
    name = ".".join(labels) + "."
    wire = query_wire(name, rdtype, edns=edns, do=do, payload=payload)
    query = parsed(wire)
    reference = dns.message.from_wire(wire)
    assert query.qname == reference.question[0].name.to_text(
        omit_final_dot=True
    ).lower().encode().rstrip(b".")
    assert query.qname_wire == reference.question[0].name.to_wire()
    assert query.qtype == rdtype and query.edns is edns and query.do is (edns and do)
    assert query.udp_size == (min(max(payload, 512), 4096) if edns else 512)
    msg = dns.message.from_wire(BOTH.build(query))
    assert msg.question[0].name.to_text() == name
