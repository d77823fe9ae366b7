"""The primary's answers, sans I/O: a query's bytes and source address in, response bytes out.

What it answers, for the one zone it serves (anything else is REFUSED):
- SOA and NS at the apex, to any client in `rpz.transfer.allow` (secondaries' refresh checks);
  other types at the apex get NODATA. Names inside the zone are not answered (REFUSED): this is
  a transfer source, not a resolver — ask the secondaries.
- AXFR and IXFR over TCP, only with a valid TSIG signature (or from `unsigned_allow` hosts).
  IXFR over UDP gets the current SOA alone, which tells the client to come back over TCP.
- TSIG failures follow RFC 8945 §5.2: NOTAUTH with BADKEY / BADSIG (unsigned) or BADTIME.
Before the first verified list is loaded every question about the zone gets SERVFAIL, so a
secondary keeps the copy it has instead of taking an empty zone.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from resolver.rpz import serial as rfc1982
from resolver.rpz import wire
from resolver.rpz.zone import (
    UP_TO_DATE,
    Diff,
    History,
    ZoneSettings,
    ZoneVersion,
    diff_versions,
    plan_ixfr,
)

LOOPBACK = ("127.0.0.0/8", "::1/128")


class NetAcl:
    """Source-address check against a list of networks (IPv4-mapped IPv6 counts as IPv4)."""

    def __init__(self, networks: list[str], loopback: bool = False) -> None:
        nets = [ipaddress.ip_network(n, strict=False) for n in networks]
        if loopback:
            nets += [ipaddress.ip_network(n) for n in LOOPBACK]
        self.nets = nets
        self._memo: dict[str, bool] = {}

    def __call__(self, host: str) -> bool:
        ok = self._memo.get(host)
        if ok is None:
            try:
                addr = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return False
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            ok = any(addr in n for n in self.nets if n.version == addr.version)
            if len(self._memo) > 65536:
                self._memo.clear()
            self._memo[host] = ok
        return ok


@dataclass
class Reply:
    """Response messages (more than one only for a transfer over TCP), produced lazily."""

    messages: Iterator[bytes]
    kind: str  # what was answered, for metrics and logs
    detail: dict = field(default_factory=dict)


def _one(message: bytes, kind: str, **detail) -> Reply:
    return Reply(iter((message,)), kind, detail)


class Responder:
    def __init__(
        self,
        settings: ZoneSettings,
        *,
        key: dns.tsig.Key | None,
        allow: NetAcl,
        unsigned_allow: NetAcl,
        message_size: int = 16384,
        history: int = 64,
    ) -> None:
        self.settings = settings
        self.policy = wire.Policy.from_settings(settings)
        self.key = key
        self.allow = allow
        self.unsigned_allow = unsigned_allow
        self.message_size = message_size
        self.history = History(history)
        self.current: ZoneVersion | None = None

    # ------------------------------------------------------------------------- zone versions

    def prepare(self, version: ZoneVersion) -> Diff | None:
        """The diff from the current version to `version` (slow for big lists: call it off the
        event loop). Raises ValueError when `version` is not newer (RFC 1982)."""
        current = self.current
        if current is None:
            return None
        order = rfc1982.compare(version.serial, current.serial)
        if order != 1:
            raise ValueError(
                f"list serial {version.list_serial} (SOA serial {version.serial}) is not after "
                f"the zone's serial {current.serial}: secondaries would never take it"
            )
        return diff_versions(current, version)

    def install(self, version: ZoneVersion, diff: Diff | None) -> None:
        """Swap in a prepared version (one reference; transfers in flight keep theirs)."""
        if diff is not None:
            self.history.record(diff)
        else:
            self.history.clear()
        self.current = version

    # ------------------------------------------------------------------------------- queries

    def handle(self, data: bytes, peer: str, tcp: bool) -> Reply | None:
        if len(data) < 12:
            return None
        qid, flags = struct.unpack_from("!HH", data)
        if flags & 0x8000:
            return None  # a response: never answer one
        try:
            query = dns.message.from_wire(data, keyring=False)
        except dns.exception.DNSException:
            return _one(wire.header_only(qid, flags, dns.rcode.FORMERR, None), "formerr")
        if len(query.question) != 1:
            return _one(wire.header_only(qid, flags, dns.rcode.FORMERR, None), "formerr")
        q = query.question[0]
        question = q.name.to_wire() + struct.pack("!HH", q.rdtype, q.rdclass)
        if query.opcode() != dns.opcode.QUERY:
            return _one(wire.header_only(qid, flags, dns.rcode.NOTIMP, question), "notimp")
        if q.rdclass != dns.rdataclass.IN or q.name != self.settings.origin:
            return _one(wire.header_only(qid, flags, dns.rcode.REFUSED, question), "refused")
        unsigned_ok = self.unsigned_allow(peer)
        if not (unsigned_ok or self.allow(peer)):
            return _one(wire.header_only(qid, flags, dns.rcode.REFUSED, question), "acl")
        signed = False
        if query.had_tsig:
            checked = self._verify(data, query, qid, flags, question, peer)
            if isinstance(checked, Reply):
                return checked
            query, signed = checked, True
        if self.current is None:
            return self._simple(query, dns.rcode.SERVFAIL, "no_list")
        rdtype = q.rdtype
        if rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            return self._transfer(query, question, tcp, signed, unsigned_ok, peer)
        if rdtype == dns.rdatatype.SOA:
            return self._simple(query, dns.rcode.NOERROR, "soa", answer=[self._soa_rrset()])
        if rdtype == dns.rdatatype.NS:
            return self._simple(query, dns.rcode.NOERROR, "ns", answer=[self._ns_rrset()])
        return self._simple(query, dns.rcode.NOERROR, "nodata", authority=[self._soa_rrset()])

    def _verify(
        self,
        data: bytes,
        query: dns.message.Message,
        qid: int,
        flags: int,
        question: bytes,
        peer: str,
    ) -> dns.message.Message | Reply:
        key = self.key
        base = wire.header_only(qid, flags, dns.rcode.NOTAUTH, question)
        if key is None or query.keyname != key.name or query.keyalgorithm != key.algorithm:
            msg = wire.unsigned_tsig_error(
                base, query.keyname, query.keyalgorithm, qid, dns.rcode.BADKEY
            )
            return _one(msg, "tsig_badkey", key=query.keyname.to_text(), peer=peer)
        try:
            return dns.message.from_wire(data, keyring={key.name: key})
        except dns.tsig.BadTime:
            signer = wire.Signer(key, query.mac, qid)
            now = struct.pack("!Q", int(time.time()))[2:]  # 48-bit server time
            msg = signer.sign(base, multi=False, error=dns.rcode.BADTIME, other=now)
            return _one(msg, "tsig_badtime", peer=peer)
        except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            msg = wire.unsigned_tsig_error(base, key.name, key.algorithm, qid, dns.rcode.BADSIG)
            return _one(msg, "tsig_badsig", key=key.name.to_text(), peer=peer)
        except dns.exception.DNSException:
            return _one(wire.header_only(qid, flags, dns.rcode.FORMERR, question), "formerr")

    def _soa_rrset(self, serial: int | None = None) -> dns.rrset.RRset:
        assert self.current is not None
        s = self.settings
        rd = s.soa_rdata(self.current.serial if serial is None else serial)
        return dns.rrset.from_rdata(s.origin, s.soa_ttl, rd)

    def _ns_rrset(self) -> dns.rrset.RRset:
        s = self.settings
        return dns.rrset.from_rdata(s.origin, s.soa_ttl, s.ns_rdata())

    def _simple(
        self,
        query: dns.message.Message,
        rcode: int,
        kind: str,
        answer: list | None = None,
        authority: list | None = None,
        **detail,
    ) -> Reply:
        r = dns.message.make_response(query)
        r.flags |= dns.flags.AA
        r.set_rcode(rcode)
        r.answer.extend(answer or [])
        r.authority.extend(authority or [])
        return _one(r.to_wire(), kind, **detail)

    def _transfer(
        self,
        query: dns.message.Message,
        question: bytes,
        tcp: bool,
        signed: bool,
        unsigned_ok: bool,
        peer: str,
    ) -> Reply:
        ixfr = query.question[0].rdtype == dns.rdatatype.IXFR
        if not tcp:
            if not ixfr:
                return self._simple(query, dns.rcode.FORMERR, "axfr_udp")
            # RFC 1995 §2: over UDP, the current SOA alone says "use TCP".
            return self._simple(query, dns.rcode.NOERROR, "ixfr_udp", answer=[self._soa_rrset()])
        if not (signed or unsigned_ok):
            return self._simple(query, dns.rcode.REFUSED, "unsigned", peer=peer)
        version = self.current
        assert version is not None
        settings = self.settings
        client_serial: int | None = None
        plan: str | list[Diff] | None = None
        if ixfr:
            soa = [
                rr
                for rr in query.authority
                if rr.rdtype == dns.rdatatype.SOA and rr.name == settings.origin
            ]
            if not soa:
                return self._simple(query, dns.rcode.FORMERR, "ixfr_no_soa")
            client_serial = soa[0][0].serial
            plan = plan_ixfr(self.history, version, client_serial)
        if plan == UP_TO_DATE:
            return self._simple(
                query, dns.rcode.NOERROR, "ixfr_current", answer=[self._soa_rrset()]
            )
        if isinstance(plan, list):
            items = wire.ixfr_items(version, settings, plan)
            kind = "ixfr"
        else:
            items = wire.axfr_items(version, settings)
            kind = "ixfr_full" if ixfr else "axfr"
        messages = wire.render(query.id, question, items, self.policy, self.message_size, signed)
        if signed:
            signer = wire.Signer(query.keyring, query.mac, query.id)
            messages = (signer.sign(m) for m in messages)
        detail = {"serial": version.serial, "client_serial": client_serial}
        if isinstance(plan, list):
            detail["diffs"] = len(plan)
        return Reply(messages, kind, detail)
