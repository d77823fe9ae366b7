"""The RPZ zone as plain data: which names it holds, their records, and the IXFR history.

A zone version is the list's domain entries (canonical A-label values) plus the settings that
turn each into records. Each domain `d` becomes two owners, `d.<zone>` and `*.d.<zone>` (the
name and every name below it), each holding the policy records of the configured action. The
zone is never materialised as per-record objects: a million entries stay a tuple of the list's
own strings, and transfers render records straight from it (`resolver.rpz.wire`).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.zone

from blocklist.state import Kind, ListState
from resolver.rpz import serial as rfc1982
from resolver.rpz.config import RpzSection

MAX_NAME_WIRE = 255
_STOP = dns.name.from_text("stop.isp.example.")
_LOCALHOST = dns.name.from_text("localhost.")
_HOSTMASTER = dns.name.from_text("hostmaster.cordon.invalid.")


@dataclass(frozen=True)
class ZoneSettings:
    """What turns list entries into records (from [rpz] and [rpz.soa])."""

    origin: dns.name.Name
    action: str = "cname"
    cname_target: dns.name.Name = _STOP
    ipv4: str = ""
    ipv6: str = ""
    ttl: int = 60
    ns: dns.name.Name = _LOCALHOST
    mname: dns.name.Name = _LOCALHOST
    rname: dns.name.Name = _HOSTMASTER
    refresh: int = 300
    retry: int = 60
    expire: int = 2_419_200
    minimum: int = 60
    soa_ttl: int = 60

    @classmethod
    def from_section(cls, rpz: RpzSection) -> ZoneSettings:
        n = dns.name.from_text
        return cls(
            origin=n(rpz.zone),
            action=rpz.action,
            cname_target=n(rpz.cname_target),
            ipv4=rpz.ipv4,
            ipv6=rpz.ipv6,
            ttl=rpz.ttl,
            ns=n(rpz.ns),
            mname=n(rpz.soa.mname),
            rname=n(rpz.soa.rname),
            refresh=rpz.soa.refresh,
            retry=rpz.soa.retry,
            expire=rpz.soa.expire,
            minimum=rpz.soa.minimum,
            soa_ttl=rpz.soa.ttl,
        )

    def policy_rdatas(self) -> list[dns.rdata.Rdata]:
        """The records each policy owner holds, for the configured action."""
        IN, T = dns.rdataclass.IN, dns.rdatatype
        if self.action == "cname":
            return [dns.rdata.from_text(IN, T.CNAME, self.cname_target.to_text())]
        if self.action == "nxdomain":
            return [dns.rdata.from_text(IN, T.CNAME, ".")]
        if self.action == "nodata":
            return [dns.rdata.from_text(IN, T.CNAME, "*.")]
        out = []
        if self.ipv4:
            out.append(dns.rdata.from_text(IN, T.A, str(ipaddress.IPv4Address(self.ipv4))))
        if self.ipv6:
            out.append(dns.rdata.from_text(IN, T.AAAA, str(ipaddress.IPv6Address(self.ipv6))))
        return out

    def soa_rdata(self, serial: int) -> dns.rdtypes.ANY.SOA.SOA:
        return dns.rdtypes.ANY.SOA.SOA(
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            self.mname,
            self.rname,
            serial,
            self.refresh,
            self.retry,
            self.expire,
            self.minimum,
        )

    def ns_rdata(self) -> dns.rdata.Rdata:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NS, self.ns.to_text())

    @property
    def origin_wire_len(self) -> int:
        return len(self.origin.to_wire())


@dataclass(frozen=True)
class Skipped:
    """List entries that the zone cannot carry, by reason."""

    url: int = 0  # URL entries: RPZ matches names, not paths
    too_long: int = 0  # the entry plus the zone name would pass 255 bytes
    reserved: int = 0  # last label starts with "rpz-": RPZ would read it as another trigger
    hashed_only: int = 0  # the authority has only the digest (a hashed-only feed): no name

    @property
    def total(self) -> int:
        return self.url + self.too_long + self.reserved + self.hashed_only


def expressible(value: str, origin_wire_len: int) -> str | None:
    """None when `value` can be a policy owner, else the reason it cannot."""
    # Wire length of "*." + value + origin: each label adds its length byte, the origin its own.
    if 2 + len(value) + 1 + origin_wire_len > MAX_NAME_WIRE:
        return "too_long"
    if value.rsplit(".", 1)[-1].startswith("rpz-"):
        return "reserved"
    return None


def domain_values(state: ListState, origin_wire_len: int) -> tuple[tuple[str, ...], Skipped]:
    """The domain entries of a plain-edition state that fit in the zone, and what was skipped."""
    if state.values is None:
        raise ValueError("the list is the hashed edition: it carries no names for an RPZ zone")
    domain = int(Kind.DOMAIN)
    out: list[str] = []
    url = too_long = reserved = hashed_only = 0
    for kind, value in zip(state.kinds, state.values, strict=True):
        if kind != domain:
            url += kind == Kind.URL  # a URLHOST entry only says a host carries URL entries
            continue
        if not value:
            hashed_only += 1
            continue
        reason = expressible(value, origin_wire_len)
        if reason is None:
            out.append(value)
        elif reason == "too_long":
            too_long += 1
        else:
            reserved += 1
    return tuple(out), Skipped(url, too_long, reserved, hashed_only)


@dataclass(frozen=True, eq=False)
class ZoneVersion:
    """One immutable version of the zone: transfers in flight keep the one they started with."""

    serial: int  # SOA serial (the list serial modulo 2**32)
    list_serial: int
    values: tuple[str, ...]
    skipped: Skipped = Skipped()
    _names: frozenset[str] | None = field(default=None, repr=False)

    @property
    def names(self) -> frozenset[str]:
        if self._names is None:
            object.__setattr__(self, "_names", frozenset(self.values))
        return self._names  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.values)


def build_version(state: ListState, list_serial: int, settings: ZoneSettings) -> ZoneVersion:
    values, skipped = domain_values(state, settings.origin_wire_len)
    return ZoneVersion(rfc1982.zone_serial(list_serial), list_serial, values, skipped)


# ----------------------------------------------------------------------------------- records


def owners(value: str, origin: dns.name.Name) -> tuple[dns.name.Name, dns.name.Name]:
    """The two policy owners of a domain entry: the name itself and everything below it."""
    name = dns.name.from_text(value, origin)
    return name, dns.name.Name((b"*", *name.labels))


def entry_records(
    value: str, settings: ZoneSettings
) -> list[tuple[dns.name.Name, int, dns.rdata.Rdata]]:
    """(owner, ttl, rdata) of one entry, as a secondary will hold them."""
    rdatas = settings.policy_rdatas()
    return [(owner, settings.ttl, rd) for owner in owners(value, settings.origin) for rd in rdatas]


def to_dns_zone(version: ZoneVersion, settings: ZoneSettings) -> dns.zone.Zone:
    """The whole zone as a dnspython Zone (for tests and small zones; export streams instead)."""
    zone = dns.zone.Zone(settings.origin, relativize=False)
    with zone.writer() as txn:
        txn.add(settings.origin, settings.soa_ttl, settings.soa_rdata(version.serial))
        txn.add(settings.origin, settings.soa_ttl, settings.ns_rdata())
        for value in version.values:
            for owner, ttl, rd in entry_records(value, settings):
                txn.add(owner, ttl, rd)
    return zone


def write_master_file(
    version: ZoneVersion, settings: ZoneSettings, out: TextIO, serial_name: str = ""
) -> int:
    """Write the zone in RFC 1035 master-file format; returns the number of records written.

    `serial_name` (absolute, or "") adds a policy record answering `serial_name TXT` with the
    list serial: how to see the serial in force on resolvers that do not show the SOA."""
    origin = settings.origin.to_text()
    out.write(f"; Cordon RPZ zone {origin}, list serial {version.list_serial}\n")
    if version.skipped.total:
        s = version.skipped
        out.write(
            f"; {s.total} list entries are not in this zone: {s.url} URL entries "
            f"(RPZ matches names, not paths), {s.too_long} too long, {s.reserved} reserved\n"
        )
    out.write(f"$ORIGIN {origin}\n$TTL {settings.ttl}\n")
    soa = settings.soa_rdata(version.serial).to_text()
    out.write(f"@ {settings.soa_ttl} IN SOA {soa}\n")
    out.write(f"@ {settings.soa_ttl} IN NS {settings.ns.to_text()}\n")
    tails = [
        f" {settings.ttl} IN {dns.rdatatype.to_text(rd.rdtype)} {rd.to_text()}\n"
        for rd in settings.policy_rdatas()
    ]
    count = 2
    if serial_name:
        out.write(
            f"{serial_name}{origin} {settings.ttl} IN TXT "
            f'"cordon list serial {version.list_serial}"\n'
        )
        count += 1
    write = out.write
    for value in version.values:
        for tail in tails:
            write(value + tail)
            write("*." + value + tail)
        count += 2 * len(tails)
    return count


# ----------------------------------------------------------------------------------- history


@dataclass(frozen=True)
class Diff:
    """What changed from one serial to the next (entry values, not records)."""

    old_serial: int
    new_serial: int
    removed: tuple[str, ...]
    added: tuple[str, ...]


def diff_versions(old: ZoneVersion, new: ZoneVersion) -> Diff:
    before, after = old.names, new.names
    removed = tuple(sorted(before - after))
    added = tuple(sorted(after - before))
    return Diff(old.serial, new.serial, removed, added)


class History:
    """The last `keep` serial-to-serial diffs, contiguous and ending at the current serial."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._diffs: deque[Diff] = deque(maxlen=keep or None)

    def record(self, diff: Diff) -> None:
        if self.keep == 0:
            return
        if self._diffs and self._diffs[-1].new_serial != diff.old_serial:
            self._diffs.clear()  # not contiguous: an IXFR across the gap would be wrong
        self._diffs.append(diff)

    def clear(self) -> None:
        self._diffs.clear()

    def __len__(self) -> int:
        return len(self._diffs)

    def __iter__(self) -> Iterator[Diff]:
        return iter(self._diffs)

    @property
    def oldest_serial(self) -> int | None:
        return self._diffs[0].old_serial if self._diffs else None

    def chain(self, client_serial: int, current_serial: int) -> list[Diff] | None:
        """The diffs that take a client at `client_serial` to `current_serial`, or None when
        the history does not reach back to it (the client then gets a full transfer)."""
        diffs = list(self._diffs)
        for i, d in enumerate(diffs):
            if d.old_serial == client_serial:
                tail = diffs[i:]
                if tail[-1].new_serial == current_serial:
                    return tail
                return None
        return None


# ------------------------------------------------------------------------------ IXFR planning

UP_TO_DATE = "up_to_date"


def plan_ixfr(
    history: History, current: ZoneVersion, client_serial: int
) -> str | list[Diff] | None:
    """What an IXFR from `client_serial` gets (RFC 1995 §2–4):

    UP_TO_DATE — the client has this serial or a newer one: the current SOA alone;
    a list of diffs — the difference sequences from the client's serial to the current one;
    None — the history does not reach the client's serial: a full (AXFR-style) answer.
    """
    order = rfc1982.compare(client_serial, current.serial)
    if order is not None and order >= 0:
        return UP_TO_DATE
    return history.chain(client_serial, current.serial)
