"""Zone transfer messages, rendered straight from a zone version, and their TSIG signatures.

A million-entry AXFR is two to four million records: building a dnspython object for each would
cost gigabytes and minutes, so records are written as bytes here. Names are compressed the usual
way (RFC 1035 §4.1.4): every owner ends in a pointer to the zone name of the question, `*.d`
points at `d`, and a CNAME target is written once per message. Everything else — parsing,
rdata encoding, HMAC contexts, TSIG record layout — is dnspython's.

Each message carries the question (RFC 5936 §2.2.1 allows it and it anchors the compression).
TSIG (RFC 8945 §5.3.1): every message is signed; the first over the request MAC, each next one
over the previous MAC, chained through dnspython's multi-message digest context.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from resolver.rpz.zone import Diff, ZoneSettings, ZoneVersion

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
QR_AA = 0x8400
QUESTION_PTR = b"\xc0\x0c"  # the question's name always starts at offset 12
MAX_PTR = 0x3FFF
FUDGE = 300
TSIG_RESERVE = 200  # room left in each message for its TSIG record


@dataclass(frozen=True)
class Policy:
    """The policy records of every owner, pre-encoded: (type, ttl, rdata bytes, is a CNAME to a
    real name that later records may point at)."""

    records: tuple[tuple[int, int, bytes, bool], ...]

    @classmethod
    def from_settings(cls, settings: ZoneSettings) -> Policy:
        out = []
        for rd in settings.policy_rdatas():
            data = rd.to_wire()  # uncompressed wire form
            pointable = rd.rdtype == dns.rdatatype.CNAME and len(data) > 3
            out.append((int(rd.rdtype), settings.ttl, data, pointable))
        return cls(tuple(out))


def labels_wire(value: str) -> bytes:
    """A relative name's labels in wire form, without the terminating root (a pointer follows)."""
    return b"".join(bytes((len(label),)) + label for label in value.encode("ascii").split(b"."))


class MessageWriter:
    """Fills transfer messages up to a size, then hands them out (unsigned, header set)."""

    def __init__(self, qid: int, question: bytes, max_size: int, signed: bool) -> None:
        self.qid = qid
        self.question = question  # qname wire + qtype + qclass, copied from the query
        self.limit = max_size - (TSIG_RESERVE if signed else 0)
        self._new()

    def _new(self) -> None:
        self.parts: list[bytes] = [self.question]
        self.size = 12 + len(self.question)
        self.count = 0
        self.owner_at = 0  # offset of the last entry's own name (`*.d` points at it)
        self.target_ptr = -1  # offset of the CNAME target written in this message, if any

    def full(self, needed: int) -> bool:
        return self.count > 0 and self.size + needed > self.limit

    def take(self) -> bytes:
        msg = HEADER.pack(self.qid, QR_AA, 1, self.count, 0, 0) + b"".join(self.parts)
        self._new()
        return msg

    def add_raw(self, owner: bytes, rrs: Iterable[tuple[int, int, bytes]]) -> None:
        """Records for one owner, owner compressed to the question name."""
        for rtype, ttl, rdata in rrs:
            rec = owner + RR_FIXED.pack(rtype, dns.rdataclass.IN, ttl, len(rdata)) + rdata
            self.parts.append(rec)
            self.size += len(rec)
            self.count += 1

    def add_entry(self, labels: bytes, policy: Policy) -> None:
        """The two owners of one entry, `d` and `*.d`, with the policy records."""
        for wildcard in (False, True):
            for rtype, ttl, rdata, pointable in policy.records:
                if wildcard:
                    owner = (
                        b"\x01*" + struct.pack("!H", 0xC000 | self.owner_at)
                        if self.owner_at <= MAX_PTR
                        else b"\x01*" + labels + QUESTION_PTR
                    )
                else:
                    owner = labels + QUESTION_PTR
                    self.owner_at = self.size
                rdata_at = self.size + len(owner) + RR_FIXED.size
                if pointable:
                    if self.target_ptr >= 0:
                        rdata = struct.pack("!H", 0xC000 | self.target_ptr)
                    elif rdata_at <= MAX_PTR:
                        self.target_ptr = rdata_at
                rec = owner + RR_FIXED.pack(rtype, dns.rdataclass.IN, ttl, len(rdata)) + rdata
                self.parts.append(rec)
                self.size += len(rec)
                self.count += 1


def _entry_room(value: str, policy: Policy) -> int:
    # Upper bound for one entry: two owners, each with every policy record uncompressed.
    per = sum(2 + len(value) + 2 + RR_FIXED.size + len(r[2]) for r in policy.records)
    return 2 * per + 2


def render(
    qid: int,
    question: bytes,
    items: Iterable[tuple[str, object]],
    policy: Policy,
    max_size: int,
    signed: bool,
) -> Iterator[bytes]:
    """Unsigned transfer messages for a sequence of items:
    ("rrs", [(type, ttl, rdata), ...]) records at the apex, or ("entries", iterable of values).
    """
    w = MessageWriter(qid, question, max_size, signed)
    for kind, payload in items:
        if kind == "rrs":
            rrs = list(payload)  # type: ignore[call-overload]
            need = sum(2 + RR_FIXED.size + len(r[2]) for r in rrs)
            if w.full(need):
                yield w.take()
            w.add_raw(QUESTION_PTR, rrs)
            continue
        for value in payload:  # type: ignore[attr-defined]
            if w.full(_entry_room(value, policy)):
                yield w.take()
            w.add_entry(labels_wire(value), policy)
    if w.count:
        yield w.take()


def soa_rr(settings: ZoneSettings, serial: int) -> tuple[int, int, bytes]:
    return (
        int(dns.rdatatype.SOA),
        settings.soa_ttl,
        settings.soa_rdata(serial).to_wire(),
    )


def ns_rr(settings: ZoneSettings) -> tuple[int, int, bytes]:
    return (int(dns.rdatatype.NS), settings.soa_ttl, settings.ns_rdata().to_wire())


def axfr_items(version: ZoneVersion, settings: ZoneSettings) -> list[tuple[str, object]]:
    """SOA, NS, every entry, SOA (RFC 5936 §2.2)."""
    soa = soa_rr(settings, version.serial)
    return [
        ("rrs", [soa, ns_rr(settings)]),
        ("entries", version.values),
        ("rrs", [soa]),
    ]


def ixfr_items(
    version: ZoneVersion, settings: ZoneSettings, diffs: list[Diff]
) -> list[tuple[str, object]]:
    """RFC 1995 §4: current SOA, then per diff: old SOA, removed, new SOA, added; current SOA."""
    current = soa_rr(settings, version.serial)
    items: list[tuple[str, object]] = [("rrs", [current])]
    for d in diffs:
        items.append(("rrs", [soa_rr(settings, d.old_serial)]))
        items.append(("entries", d.removed))
        items.append(("rrs", [soa_rr(settings, d.new_serial)]))
        items.append(("entries", d.added))
    items.append(("rrs", [current]))
    return items


# --------------------------------------------------------------------------------------- TSIG


def tsig_rdata(
    key: dns.tsig.Key, qid: int, error: int = 0, other: bytes = b"", now: int | None = None
) -> dns.rdtypes.ANY.TSIG.TSIG:
    return dns.rdtypes.ANY.TSIG.TSIG(
        dns.rdataclass.ANY,
        dns.rdatatype.TSIG,
        key.algorithm,
        int(time.time()) if now is None else now,
        FUDGE,
        b"",
        qid,
        error,
        other,
    )


def append_tsig(wire: bytes, key_name: dns.name.Name, rdata: dns.rdtypes.ANY.TSIG.TSIG) -> bytes:
    """`wire` with a TSIG record added as the last additional record."""
    body = rdata.to_wire()
    rr = key_name.to_wire() + RR_FIXED.pack(dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(body))
    (arcount,) = struct.unpack_from("!H", wire, 10)
    return wire[:10] + struct.pack("!H", arcount + 1) + wire[12:] + rr + body


class Signer:
    """Signs the messages of one response in sequence (RFC 8945 §5.3 and §5.3.1)."""

    def __init__(self, key: dns.tsig.Key, request_mac: bytes, qid: int) -> None:
        self.key = key
        self.request_mac = request_mac
        self.qid = qid
        self.ctx = None
        self.first = True

    def sign(self, wire: bytes, multi: bool = True, error: int = 0, other: bytes = b"") -> bytes:
        now = int(time.time())
        template = tsig_rdata(self.key, self.qid, error, other, now)
        rdata, ctx = dns.tsig.sign(
            wire,
            self.key,
            template,
            now,
            self.request_mac if self.first else None,
            self.ctx,
            multi,
        )
        self.ctx, self.first = ctx, False
        return append_tsig(wire, self.key.name, rdata)


def unsigned_tsig_error(
    wire: bytes, key_name: dns.name.Name, algorithm: dns.name.Name, qid: int, error: int
) -> bytes:
    """A TSIG record carrying BADKEY or BADSIG, with an empty MAC (RFC 8945 §5.3.2)."""
    rdata = dns.rdtypes.ANY.TSIG.TSIG(
        dns.rdataclass.ANY,
        dns.rdatatype.TSIG,
        algorithm,
        int(time.time()),
        FUDGE,
        b"",
        qid,
        error,
        b"",
    )
    return append_tsig(wire, key_name, rdata)


def header_only(qid: int, flags: int, rcode: int, question: bytes | None) -> bytes:
    """A response with no records: the question (if any) and an rcode."""
    flags = (flags & 0x7900) | 0x8000 | (rcode & 0xF)  # keep opcode and RD, set QR
    return HEADER.pack(qid, flags, 1 if question else 0, 0, 0, 0) + (question or b"")


def rcode_name(rcode: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode)).lower()
