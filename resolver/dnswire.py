"""Sans-I/O DNS message handling for the resolver hot path (design §6).

Pure functions over bytes and ints: no sockets, clocks, logging or DNS libraries. Every query pays
for a handful of struct unpacks and slices, never for an object tree:

- `parse_query` reads the header, the question and the additional section of a client query, or
  says which RCODE to answer a malformed one with (or that it must be dropped);
- `BlockedAnswers` precomputes the answers for listed names, so building one is a join of
  the client's id, flags and question with a cached tail;
- `inspect_response` validates an upstream reply once, before it is cached, and records where its
  TTLs sit, so `rewrite_response` can serve it to later clients by patching bytes in place;
- `truncate_for_udp`, `frame` and `TcpDeframer` handle the transports' size rules.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# RCODEs (RFC 1035 §4.1.1, RFC 6891 §9 for BADVERS, which needs the OPT's extended bits).
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

TYPE_A = 1
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# Extended DNS Errors (RFC 8914 §4).
EDE_OPTION = 15
EDE_FORGED_ANSWER = 4
EDE_CENSORED = 16
EDE_PROHIBITED = 18
EDE_NO_REACHABLE_AUTHORITY = 22
EDE_NETWORK_ERROR = 23

EDNS_PAYLOAD = 1232  # what we advertise: the DNS Flag Day 2020 value, safe from fragmentation
MIN_UDP = 512
MAX_UDP = 4096
MAX_TCP_MESSAGE = 65535
MAX_EDE_TEXT = 255  # keeps a blocked answer (question + SOA + OPT) well under 1232 bytes

# Header flag bits.
_QR = 0x8000
_OPCODE = 0x7800
_TC = 0x0200
_RD = 0x0100
_RA = 0x0080
_CD = 0x0010
_DO = 0x8000  # in the OPT TTL field

_MAX_NAME = 255  # wire length, including the root label (RFC 1035 §3.1)
_MAX_HOPS = 128  # compression pointers followed per name
_PTR_NAME = b"\xc0\x0c"  # owner = the question name, which always starts at offset 12

_HEADER = struct.Struct("!HHHHHH")
_ID_FLAGS = struct.Struct("!HH")
_TYPE_CLASS = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
_OPT_FIXED = struct.Struct("!HHBBHH")  # type, payload size, ext-rcode, version, flags, RDLENGTH
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_SOA_TIMERS = struct.Struct("!IIIII")
_COUNTS = struct.Struct("!HHHH")
_KEY_TAIL = struct.Struct("!HHB")
_new_tuple = tuple.__new__


class Query(NamedTuple):
    """A parsed client query. `question` and `qname_wire` are the client's bytes, case included."""

    id: int
    flags: int  # the whole 16-bit flags word
    opcode: int
    rd: bool
    cd: bool
    qname_wire: bytes  # uncompressed labels incl. the root byte, 0x20 case preserved
    qname: bytes  # lowercase dotted, no trailing dot; b"" for the root
    qtype: int
    qclass: int
    question: bytes  # name + type + class, exactly as sent
    edns: bool
    udp_size: int  # clamped to [MIN_UDP, MAX_UDP]; MIN_UDP without EDNS
    do: bool
    edns_version: int


class SoaParams(NamedTuple):
    """Fields of the SOA synthesized in NODATA answers for listed names."""

    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


class ResponseInfo(NamedTuple):
    """What `inspect_response` learnt about an upstream reply."""

    rcode: int  # full RCODE: header bits plus the OPT's extended bits
    tc: bool
    qname: bytes  # lowercase dotted
    qtype: int
    qclass: int
    question_end: int  # offset just past the question
    ttl_offsets: tuple[int, ...]  # every RR TTL field except the OPT's
    ttl: int | None  # cache lifetime: answer minimum, or RFC 2308 negative TTL; None = don't cache
    negative: bool  # NXDOMAIN or NODATA
    answer_owners: tuple[bytes, ...]  # lowercase dotted owners of answer RRs
    cname_targets: tuple[bytes, ...]  # lowercase dotted targets of answer CNAMEs
    opt_start: int  # offset of the OPT RR, -1 when absent
    opt_end: int


class FramingError(ValueError):
    """A TCP length prefix that no DNS message can have; the connection must be closed."""


# ---------------------------------------------------------------------------------------------
# Names


def name_to_wire(name: str) -> bytes:
    """Uncompressed wire form of a dotted ASCII name ("" or "." is the root)."""
    name = name.rstrip(".") if name != "." else ""
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.encode("ascii").split(b"."):
        if not 0 < len(label) < 64:
            raise ValueError(f"bad label length in {name!r}")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > _MAX_NAME:
        raise ValueError(f"name longer than {_MAX_NAME} bytes: {name!r}")
    return bytes(out)


def _dotted(labels: list[bytes]) -> bytes:
    """Lowercase dotted form; a dot inside a label is escaped so two names never share a form."""
    name = b".".join(labels).lower()
    if labels and name.count(b".") != len(labels) - 1:
        name = b".".join(
            label.replace(b"\\", b"\\\\").replace(b".", b"\\.") for label in labels
        ).lower()
    return name


def _read_name(data: bytes, pos: int, end: int, labels: list[bytes] | None) -> int:
    """Validate the (possibly compressed) name at `pos`; return the offset after it, or -1.

    Labels are appended to `labels` when given. In-place bytes must lie below `end`. Each
    pointer must target strictly before the start of the segment that holds it, so every jump
    goes backwards past everything already read: loops are impossible, and hops are capped too.
    """
    after = -1
    segment = pos
    size = 1
    hops = 0
    while True:
        if pos >= end:
            return -1
        length = data[pos]
        if length == 0:
            return pos + 1 if after < 0 else after
        if length < 64:
            size += length + 1
            if size > _MAX_NAME:
                return -1
            nxt = pos + 1 + length
            if labels is not None:
                labels.append(data[pos + 1 : nxt])
            pos = nxt
        elif length >= 0xC0:
            if pos + 1 >= end:
                return -1
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if after < 0:
                after = pos + 2
            hops += 1
            if not 12 <= target < segment or hops > _MAX_HOPS:
                return -1
            segment = pos = target
        else:
            return -1  # 0x40/0x80: extended label types, obsolete (RFC 6891 §5)


def _skip_name(data: bytes, pos: int, end: int) -> int:
    """Offset after the name at `pos` without following pointers (for RRs we only step over)."""
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length < 64:
            pos += 1 + length
        elif length >= 0xC0:
            return pos + 2 if pos + 2 <= end else -1
        else:
            return -1
    return -1


# ---------------------------------------------------------------------------------------------
# Client queries


def parse_query(data: bytes) -> Query | int | None:
    """Parse a client query: a `Query`, an RCODE to answer with, or None to drop it silently."""
    if len(data) < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & 0x8000:  # QR: a response; answering it could start a loop between two servers
        return None
    if flags & 0x7800:  # any opcode but QUERY
        return NOTIMP
    if qdcount != 1 or ancount or nscount:
        return FORMERR

    # Bounds are checked by the interpreter: indexing past the end raises IndexError and
    # unpack_from raises struct.error, both free until they happen (zero-cost try in 3.11).
    # Slices never raise, so every slice end is re-read by an index or checked against len.
    try:
        # Question name: uncompressed labels only; there is nothing before it to point to.
        labels: list[bytes] = []
        pos = 12
        length = data[12]
        while length:
            if length > 63:
                return FORMERR  # compression pointer or obsolete label type
            start = pos + 1
            pos = start + length
            if pos > 266:  # the root byte would land past 12 + 255 - 1: name over 255 bytes
                return FORMERR
            labels.append(data[start:pos])
            length = data[pos]
        name_end = pos + 1
        qtype, qclass = _TYPE_CLASS.unpack_from(data, name_end)
        qend = pos = name_end + 4

        # Additional section: at most one OPT (owner root); other RRs (TSIG...) are stepped over.
        edns = do = False
        udp_size = 512
        version = 0
        for _ in range(arcount):
            root = not data[pos]
            pos = pos + 1 if root else _skip_name(data, pos, len(data))
            if pos < 0:
                return FORMERR
            rtype, rclass, rttl, rdlength = _RR_FIXED.unpack_from(data, pos)
            pos += 10
            end = pos + rdlength
            if rtype == 41:
                if edns or not root:
                    return FORMERR  # RFC 6891 §6.1.1
                edns = True
                udp_size = 512 if rclass < 512 else 4096 if rclass > 4096 else rclass
                version = (rttl >> 16) & 0xFF
                do = rttl & 0x8000 != 0
                while pos < end:  # options must tile the RDATA exactly; contents are ignored
                    pos += 4 + _U16.unpack_from(data, pos + 2)[0]
                if pos != end:
                    return FORMERR
            pos = end
    except (IndexError, struct.error):
        return FORMERR
    if pos != len(data):  # trailing bytes, or the last RDATA ran past the end
        return FORMERR
    if version:
        return BADVERS
    qname = b".".join(labels).lower()
    if qname.count(b".") >= len(labels) > 0:  # a label holds a dot: use the escaped form
        qname = _dotted(labels)
    # tuple.__new__ skips the NamedTuple's Python-level __new__ (about 0.3 µs per query).
    return _new_tuple(
        Query,
        (
            qid,
            flags,
            0,
            flags & 0x0100 != 0,
            flags & 0x0010 != 0,
            data[12:name_end],
            qname,
            qtype,
            qclass,
            data[12:qend],
            edns,
            udp_size,
            do,
            version,
        ),
    )


def _opt_rr(ext_rcode: int, do: bool, options: bytes) -> bytes:
    """Our OPT RR: root owner, our payload size, EDNS version 0, DO echoed."""
    return (
        b"\x00"
        + _OPT_FIXED.pack(TYPE_OPT, EDNS_PAYLOAD, ext_rcode, 0, _DO if do else 0, len(options))
        + options
    )


def ede_option(info_code: int, text: bytes = b"") -> bytes:
    """One Extended DNS Error option (RFC 8914): INFO-CODE and UTF-8 EXTRA-TEXT."""
    return _U16.pack(EDE_OPTION) + _U16.pack(2 + len(text)) + _U16.pack(info_code) + text


def _find_opt(data: bytes, n: int, qdcount: int, rrcount: int) -> tuple[int, bool] | None:
    """(offset, DO bit) of the first root-owned OPT, reached through well-bounded records.

    Lenient on purpose (pointers are stepped over, not followed): it serves error replies and
    truncation, where the message may be one `parse_query` refused.
    """
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos, n)
        if pos < 0 or pos + 4 > n:
            return None
        pos += 4
    for _ in range(rrcount):
        owner = pos
        pos = _skip_name(data, pos, n)
        if pos < 0 or pos + 10 > n:
            return None
        rtype, _rclass, rttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlength
        if pos > n:
            return None
        if rtype == TYPE_OPT and data[owner] == 0:
            return owner, bool(rttl & _DO)
    return None


def error_response(data: bytes, rcode: int) -> bytes | None:
    """Answer a query `parse_query` refused: client id, opcode and RD, RA, `rcode`.

    The question is echoed when it parses; an OPT is added when the query had a reachable one
    (and carries the extended bits of BADVERS). None when the header itself is unusable.
    """
    n = len(data)
    if n < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & _QR:
        return None
    question = b""
    if qdcount == 1:
        pos = 12
        while pos < n and 0 < data[pos] < 64:
            pos += 1 + data[pos]
        if pos < n and data[pos] == 0 and pos + 5 <= n and pos + 1 - 12 <= _MAX_NAME:
            question = data[12 : pos + 5]
    opt = _find_opt(data, n, qdcount, ancount + nscount + arcount)
    if opt is None and rcode > 15:
        rcode = SERVFAIL  # an extended RCODE cannot be expressed without an OPT
    out_flags = _QR | _RA | (flags & (_OPCODE | _RD | _CD)) | (rcode & 0xF)
    header = _HEADER.pack(qid, out_flags, 1 if question else 0, 0, 0, 1 if opt else 0)
    if opt is None:
        return header + question
    return header + question + _opt_rr(rcode >> 4, opt[1], b"")


def response_for(
    query: Query, rcode: int, *, ede_code: int | None = None, ede_text: bytes = b""
) -> bytes:
    """An answer with no records (REFUSED, SERVFAIL, ...) to a parsed query.

    The EDE option (e.g. EDE_PROHIBITED for an ACL refusal) is only sent to EDNS clients.
    """
    if not query.edns and rcode > 15:
        rcode = SERVFAIL
    flags = _QR | _RA | (query.flags & (_OPCODE | _RD | _CD)) | (rcode & 0xF)
    if not query.edns:
        return _HEADER.pack(query.id, flags, 1, 0, 0, 0) + query.question
    options = b"" if ede_code is None else ede_option(ede_code, ede_text)
    return (
        _HEADER.pack(query.id, flags, 1, 0, 0, 1)
        + query.question
        + _opt_rr(rcode >> 4, query.do, options)
    )


# ---------------------------------------------------------------------------------------------
# Answers for listed names

# Per (EDNS, DO) variant: qtype -> (ANCOUNT..ARCOUNT bytes, records after the question).
_Template = tuple[bytes, bytes]


class BlockedAnswers:
    """Precomputed answers for listed names (design §6); `build` only adds id, flags, question.

    A -> the stop page IPv4; AAAA -> its IPv6, or NODATA when none; ANY -> the A record as a
    subset answer (RFC 8482), or NODATA; every other type -> NODATA with a synthesized SOA
    whose owner is the question name. EDNS clients get EDE 16 (Censored) with `ede_text`, plus
    EDE 4 (Forged Answer) when an address was forged. Records use pointers to offset 12, so the
    tails do not depend on the question and are built once per (qtype kind, EDNS, DO).
    """

    __slots__ = ("_ede_text", "_variants")

    def __init__(
        self,
        ipv4: bytes | None,
        ipv6: bytes | None,
        ttl: int,
        soa: SoaParams,
        ede_text: bytes,
    ) -> None:
        if ipv4 is not None and len(ipv4) != 4:
            raise ValueError("ipv4 must be 4 bytes")
        if ipv6 is not None and len(ipv6) != 16:
            raise ValueError("ipv6 must be 16 bytes")
        if not 0 <= ttl <= 0x7FFFFFFF:
            raise ValueError("ttl out of range")
        ede_text.decode("utf-8")  # EXTRA-TEXT must be UTF-8; raises UnicodeDecodeError if not
        if len(ede_text) > MAX_EDE_TEXT:
            raise ValueError(f"ede_text longer than {MAX_EDE_TEXT} bytes")
        for value in soa[2:]:
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError("SOA timers must be unsigned 32-bit")

        soa_rdata = (
            name_to_wire(soa.mname)
            + name_to_wire(soa.rname)
            + _SOA_TIMERS.pack(soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)
        )
        soa_ttl = min(ttl, soa.minimum)
        soa_rr = _PTR_NAME + _RR_FIXED.pack(TYPE_SOA, CLASS_IN, soa_ttl, len(soa_rdata)) + soa_rdata
        censored = ede_option(EDE_CENSORED, ede_text)
        forged = ede_option(EDE_FORGED_ANSWER) + censored

        def forged_answer(rtype: int, rdata: bytes) -> tuple[bytes, bytes, bytes]:
            rr = _PTR_NAME + _RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata
            return rr, b"", forged

        nodata = (b"", soa_rr, censored)
        kinds: dict[int, tuple[bytes, bytes, bytes]] = {}  # qtype -> (answer, authority, options)
        if ipv4 is not None:
            kinds[TYPE_A] = kinds[TYPE_ANY] = forged_answer(TYPE_A, ipv4)
        if ipv6 is not None:
            kinds[TYPE_AAAA] = forged_answer(TYPE_AAAA, ipv6)

        def template(parts: tuple[bytes, bytes, bytes], edns: bool, do: bool) -> _Template:
            answer, authority, options = parts
            opt = _opt_rr(0, do, options) if edns else b""
            counts = _COUNTS.pack(1, bool(answer), bool(authority), bool(opt))
            return counts, answer + authority + opt

        variants = []
        for edns, do in ((False, False), (True, False), (True, True)):
            table = {qtype: template(parts, edns, do) for qtype, parts in kinds.items()}
            variants.append((table, template(nodata, edns, do)))
        self._variants: tuple[tuple[dict[int, _Template], _Template], ...] = tuple(variants)
        self._ede_text = ede_text

    @property
    def variants(self) -> tuple[tuple[dict[int, _Template], _Template], ...]:
        """Per (no EDNS, EDNS, EDNS+DO): qtype -> (counts, tail), and the NODATA template."""
        return self._variants

    @property
    def text(self) -> bytes:
        return self._ede_text

    def build(self, query: Query) -> bytes:
        """The answer for `query`, whose name is listed."""
        if query.qclass != CLASS_IN and query.qclass != CLASS_ANY:
            # Our records are class IN; a CHAOS/HESIOD question for a listed name gets a refusal.
            return response_for(query, REFUSED, ede_code=EDE_CENSORED, ede_text=self._ede_text)
        table, nodata = self._variants[(1 + query.do) if query.edns else 0]
        counts, tail = table.get(query.qtype, nodata)
        # QR, RA; RD and CD copied (RFC 1035, RFC 4035 §3.2.2); AA=0, AD=0: this is not data.
        return (
            _ID_FLAGS.pack(query.id, 0x8080 | (query.flags & 0x0110))
            + counts
            + query.question
            + tail
        )


# ---------------------------------------------------------------------------------------------
# Upstream responses and the cache


def cache_key(query: Query) -> bytes:
    """Lowercase wire name + qtype + qclass + DO/CD bits.

    The wire form (not the dotted one) is used because it is unambiguous: a label holding a dot
    can never share a key with two labels.
    """
    return query.qname_wire.lower() + _KEY_TAIL.pack(
        query.qtype, query.qclass, query.do | (query.cd << 1)
    )


def inspect_response(data: bytes) -> ResponseInfo | None:
    """Validate an upstream reply and locate what caching needs; None on any malformation.

    Only owner names and the RDATA names we read (CNAME, SOA) are validated; other RDATA is
    opaque and passed through, as a forwarder does.
    """
    n = len(data)
    if n < 12:
        return None
    _qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if not flags & _QR or qdcount != 1:
        return None
    labels: list[bytes] = []
    pos = _read_name(data, 12, n, labels)  # segment start 12: no pointer can be valid here
    if pos < 0 or pos + 4 > n:
        return None
    qtype, qclass = _TYPE_CLASS.unpack_from(data, pos)
    qend = pos = pos + 4
    qname = _dotted(labels)

    # Names already validated, by start offset. Most owners are a bare pointer to one of them
    # (the question, a CNAME target), so each distinct name is walked and decoded once.
    decoded: dict[int, bytes] = {12: qname}
    checked: set[int] = set()
    offsets: list[int] = []
    owners: list[bytes] = []
    targets: list[bytes] = []
    answer_min: int | None = None
    answered = False  # an answer RR of the asked type (any type for ANY)
    soa_ttl: int | None = None
    opt_start = opt_end = -1
    ext_rcode = 0
    nsend = ancount + nscount
    for index in range(nsend + arcount):
        owner = pos
        in_answer = index < ancount
        target = -1
        if pos + 1 < n and data[pos] >= 0xC0:
            target = ((data[pos] & 0x3F) << 8) | data[pos + 1]
        if target in decoded:
            name = decoded[target]
            pos += 2
        elif target in checked and not in_answer:
            pos += 2
        elif in_answer:
            owner_labels: list[bytes] = []
            pos = _read_name(data, pos, n, owner_labels)
            if pos < 0:
                return None
            name = decoded[owner] = _dotted(owner_labels)
        else:
            pos = _read_name(data, pos, n, None)
            if pos < 0:
                return None
            checked.add(owner)
        if pos + 10 > n:
            return None
        rtype, _rclass, rttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        rdata = pos + 10
        end = rdata + rdlength
        if end > n:
            return None
        if rtype == TYPE_OPT:
            if index < nsend or opt_start >= 0 or pos != owner + 1:
                return None  # OPT only in additional, once, with the root as owner
            opt_start, opt_end = owner, end
            ext_rcode = rttl >> 24
        else:
            offsets.append(pos + 4)
            ttl = rttl if rttl < 0x80000000 else 0  # RFC 2181 §8: top bit set means zero
            if in_answer:
                if name not in owners:
                    owners.append(name)
                if answer_min is None or ttl < answer_min:
                    answer_min = ttl
                if rtype == qtype or qtype == TYPE_ANY:
                    answered = True
                if rtype == TYPE_CNAME:
                    target_labels: list[bytes] = []
                    if _read_name(data, rdata, end, target_labels) != end:
                        return None
                    decoded[rdata] = cname = _dotted(target_labels)
                    targets.append(cname)
            elif rtype == TYPE_SOA and index < nsend and soa_ttl is None:
                p = _read_name(data, rdata, end, None)
                p = _read_name(data, p, end, None) if p >= 0 else -1
                if p < 0 or p + 20 != end:
                    return None
                minimum = _U32.unpack_from(data, p + 16)[0]
                soa_ttl = min(ttl, minimum if minimum < 0x80000000 else 0)
        pos = end
    if pos != n:
        return None

    rcode = (ext_rcode << 4) | (flags & 0xF)
    negative = rcode == NXDOMAIN or (rcode == NOERROR and not answered)
    if negative:
        # RFC 2308 §5: no SOA, no negative caching; a CNAME chain's own TTLs still bound it.
        ttl_out = soa_ttl if answer_min is None or soa_ttl is None else min(soa_ttl, answer_min)
    else:
        ttl_out = answer_min
    return ResponseInfo(
        rcode,
        flags & _TC != 0,
        qname,
        qtype,
        qclass,
        qend,
        tuple(offsets),
        ttl_out,
        negative,
        tuple(owners),
        tuple(targets),
        opt_start,
        opt_end,
    )


def rewrite_response(
    data: bytes,
    info: ResponseInfo,
    query_id: int,
    question: bytes,
    age: int,
    *,
    keep_opt: bool = True,
) -> bytes:
    """A cached reply for a new client: its id, its question bytes, TTLs aged by `age` seconds.

    `question` may differ from the cached one only in the case of the name, which keeps every
    offset and compression pointer valid; anything else raises ValueError (a cache bug: serving
    another name's answer must be impossible, and the check costs ~0.2 µs). With keep_opt=False
    the upstream OPT is dropped (for clients that sent none) when it is the last record, which
    is where resolvers put it.
    """
    qend = info.question_end
    cached = data[12:qend]
    # Type and class compared raw: lower() would also fold a type byte 0x41 into 0x61.
    if question[-4:] != cached[-4:] or question.lower() != cached.lower():
        raise ValueError("question differs from the cached one beyond case")
    buf = bytearray(data)
    _U16.pack_into(buf, 0, query_id)
    buf[12:qend] = question
    if age > 0:
        unpack, pack = _U32.unpack_from, _U32.pack_into
        for off in info.ttl_offsets:
            ttl = unpack(buf, off)[0]
            pack(buf, off, ttl - age if age < ttl < 0x80000000 else 0)
    if not keep_opt and info.opt_start >= 0 and info.opt_end == len(buf):
        del buf[info.opt_start :]
        _U16.pack_into(buf, 10, _U16.unpack_from(buf, 10)[0] - 1)
    return bytes(buf)


# ---------------------------------------------------------------------------------------------
# Transports


def truncate_for_udp(response: bytes, limit: int) -> bytes:
    """`response` if it fits in `limit` (at least 512), else header + question with TC=1.

    The OPT RR, when the response has one, is kept so EDNS clients still see EDNS.
    """
    limit = max(limit, MIN_UDP)
    n = len(response)
    if n <= limit or n < 12:
        return response
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(response)
    pos = 12
    found = None
    for _ in range(qdcount):
        pos = _skip_name(response, pos, n)
        if pos < 0 or pos + 4 > n:
            pos, qdcount = 12, 0
            break
        pos += 4
    else:  # only look for the OPT behind a question that parsed
        found = _find_opt(response, n, qdcount, ancount + nscount + arcount)
    out = response[12:pos]
    opt = b""
    if found is not None:
        start = found[0]
        rdlength = _U16.unpack_from(response, start + 9)[0]
        opt = response[start : start + 11 + rdlength]
        if 12 + len(out) + len(opt) > limit:
            opt = b""
    header = _HEADER.pack(qid, flags | _TC, qdcount, 0, 0, 1 if opt else 0)
    return header + out + opt


def frame(msg: bytes) -> bytes:
    """DNS-over-TCP framing: a two-byte length prefix (RFC 1035 §4.2.2)."""
    if len(msg) > MAX_TCP_MESSAGE:
        raise ValueError("DNS message longer than 65535 bytes")
    return _U16.pack(len(msg)) + msg


class TcpDeframer:
    """Splits a DNS-over-TCP byte stream into messages, whatever the chunking.

    A length prefix below 12 (no room for a header; 0 included) raises FramingError, now and on
    every later feed: the caller must close the connection. The 16-bit prefix itself caps
    messages at 65535 bytes, so at most one partial message plus one chunk is ever buffered.
    """

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages completed by them, in order."""
        if self._error is not None:
            raise FramingError(self._error)
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if length < 12:
                self._error = f"TCP frame length {length} is shorter than a DNS header"
                raise FramingError(self._error)
            end = pos + 2 + length
            if end > n:
                break
            out.append(bytes(buf[pos + 2 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete message (non-zero at EOF means a cut message)."""
        return len(self._buf)
