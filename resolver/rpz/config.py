"""rpz.toml: the RPZ feed's configuration ([sync], [rails] and [rpz] with its sub-tables).

[sync] says where the verified list lives (the same section `resolver sync` reads; it must be
the plain edition); [rpz] describes the zone, its transfers and who gets NOTIFY. Every key is
documented in docs/rpz.md. Unknown keys are refused; the resolver's own sections ([server],
[upstream], ...) may sit in the same file and are ignored here, so one file can drive both.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import dns.exception
import dns.name
import dns.tsig
from pydantic import Field, field_validator, model_validator

from blocklist.config import (
    AddressList,
    ConfigError,
    LoopbackAddress,
    OptionalIPv4,
    OptionalIPv6,
    Section,
    load_config,
)
from blocklist.hostport import parse_hostport
from blocklist.sync.config import SyncConfig

Ttl = Annotated[int, Field(ge=0, le=2_147_483_647)]
# Sections of resolver.toml that `resolver serve` reads; tolerated (and ignored) here.
RESOLVER_SECTIONS = ("server", "acl", "upstream", "cache", "blocking", "metrics")
TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}


def absolute_name(text: str) -> str:
    """A valid domain name in text form, made absolute (trailing dot), lowercased."""
    try:
        name = dns.name.from_text(text.strip())
    except dns.exception.DNSException as exc:
        raise ValueError(f"{text!r} is not a valid domain name: {exc}") from None
    return name.to_text().lower()


def _networks(values: list[str]) -> list[str]:
    for v in values:
        ipaddress.ip_network(v, strict=False)
    return values


class SoaSection(Section):
    # The primary's name and the zone contact (RFC 1035 SOA MNAME/RNAME).
    mname: str = "localhost."
    rname: str = "hostmaster.cordon.invalid."
    # Secondaries poll this often when a NOTIFY is lost, and retry this often after a failure.
    refresh: Annotated[int, Field(ge=1, le=2_147_483_647)] = 300
    retry: Annotated[int, Field(ge=1, le=2_147_483_647)] = 60
    # A secondary that cannot reach the primary for this long stops serving the zone (and so stops
    # blocking): keep it long — the list itself never expires on an ASP, it freezes.
    expire: Annotated[int, Field(ge=1, le=2_147_483_647)] = 2_419_200
    minimum: Ttl = 60  # negative-caching TTL (RFC 2308)
    ttl: Ttl = 60  # TTL of the SOA and NS records

    @field_validator("mname", "rname")
    @classmethod
    def _names(cls, v: str) -> str:
        return absolute_name(v)

    @model_validator(mode="after")
    def _timers(self) -> SoaSection:
        if self.expire <= self.refresh + self.retry:
            raise ValueError("rpz.soa.expire must be larger than refresh + retry (RFC 1912)")
        return self


class TransferSection(Section):
    # Networks whose hosts may ask for the SOA and transfer the zone (besides loopback).
    allow: list[str] = Field(default_factory=list)
    allow_loopback: bool = True
    # TSIG (RFC 8945) key every AXFR/IXFR must be signed with: its name, algorithm, and a file
    # holding the base64 secret (what `resolver rpz keygen` writes, or tsig-keygen's secret).
    tsig_key_name: str = "cordon-rpz."
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512"] = "hmac-sha256"
    tsig_secret_file: Path | None = None
    # Hosts that may transfer WITHOUT TSIG (secondaries that cannot sign, e.g. an Unbound too old
    # for TSIG). Keep this to single addresses; they must also be inside `allow` or loopback.
    unsigned_allow: list[str] = Field(default_factory=list)
    # Largest transfer message in bytes; large zones go out as many messages (RFC 5936 §2.2).
    message_size: Annotated[int, Field(ge=1024, le=65535)] = 16384

    @field_validator("allow", "unsigned_allow")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        return _networks(v)

    @field_validator("tsig_key_name")
    @classmethod
    def _key(cls, v: str) -> str:
        return absolute_name(v)

    @property
    def anyone_can_transfer(self) -> bool:
        return self.tsig_secret_file is not None or bool(self.unsigned_allow)


class NotifySection(Section):
    # Secondaries told about each new serial (RFC 1996), "address" or "address:port".
    targets: list[str] = Field(default_factory=list)
    # NOTIFY is sent again until the secondary answers, this many times, `timeout` seconds apart
    # (doubling each time).
    retries: Annotated[int, Field(ge=0, le=20)] = 5
    timeout: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Sign NOTIFY with the TSIG key. Off by default: a NOTIFY is only a hint (the secondary then
    # asks for the SOA itself, signed) and some secondaries (Unbound) do not know TSIG.
    sign: bool = False

    @field_validator("targets")
    @classmethod
    def _targets(cls, values: list[str]) -> list[str]:
        for v in values:
            parse_hostport(v)
        return values

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [parse_hostport(v) for v in self.targets]


Action = Literal["cname", "local", "nxdomain", "nodata"]
# What each resolver family enforces from an RPZ zone file. Knot Resolver 5 ignores a CNAME to
# another name ("CNAME with custom target in RPZ is not supported yet") and so blocks nothing.
TARGET_ACTIONS: dict[str, tuple[str, ...]] = {
    "any": ("cname", "local", "nxdomain", "nodata"),
    "kresd": ("local", "nxdomain", "nodata"),
}


class ExportSection(Section):
    # The zone file `resolver rpz export` writes when --output is not given.
    output: Path | None = None
    # Which resolver loads the file: "kresd" (Knot Resolver) refuses actions it cannot enforce.
    target: Literal["any", "kresd"] = "any"
    # The action in the file; unset: rpz.action, except for kresd where "cname" becomes "local"
    # (needs rpz.ipv4/ipv6) because kresd cannot enforce it.
    action: Action | None = None
    # `--follow` writes a new file at most this often (seconds); updates in between are merged
    # into the next write. Knot Resolver stops answering while it re-reads a big zone.
    min_interval: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    # A TXT record answering "<name> TXT" with the list serial of the file, for resolvers that
    # give no other way to see the serial in force (Knot Resolver). "" leaves it out.
    serial_name: str = "serial.cordon-rpz.invalid."

    @field_validator("serial_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return absolute_name(v) if v else ""


class MetricsSection(Section):
    enabled: bool = True
    listen: LoopbackAddress = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9154


class RpzSection(Section):
    # The policy zone's name (what the resolvers' response-policy / rpz: clause names).
    zone: str = "rpz.cordon.example."
    # What a listed name (and every name below it) becomes:
    #   "cname"    -> CNAME to `cname_target` (your stop page host)
    #   "local"    -> A `ipv4` / AAAA `ipv6` of the stop page (RPZ local data)
    #   "nxdomain" -> CNAME .   (the name does not exist)
    #   "nodata"   -> CNAME *.  (the name exists, with no data)
    action: Action = "cname"
    cname_target: str = "stop.isp.example."
    ipv4: OptionalIPv4 = ""
    ipv6: OptionalIPv6 = ""
    ttl: Ttl = 60  # TTL of the policy records
    ns: str = "localhost."  # the apex NS (RPZ zones are never delegated; any name works)
    listen: Annotated[AddressList, Field(min_length=1)] = Field(
        default_factory=lambda: ["127.0.0.1"]
    )
    port: Annotated[int, Field(ge=0, le=65535)] = 53
    # Serial-to-serial differences kept in memory for IXFR; older clients get a full transfer.
    history: Annotated[int, Field(ge=0, le=100_000)] = 64
    # How often to look for a new state.bin written by `resolver sync`.
    list_poll_interval: Annotated[float, Field(gt=0, le=300)] = 1.0
    tcp_idle_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    tcp_max_connections: Annotated[int, Field(ge=1, le=100_000)] = 128
    soa: SoaSection = SoaSection()
    transfer: TransferSection = TransferSection()
    export: ExportSection = ExportSection()
    notify: NotifySection = NotifySection()
    metrics: MetricsSection = MetricsSection()

    @field_validator("zone", "cname_target", "ns")
    @classmethod
    def _names(cls, v: str) -> str:
        return absolute_name(v)

    @model_validator(mode="after")
    def _action(self) -> RpzSection:
        if self.action == "local" and not (self.ipv4 or self.ipv6):
            raise ValueError('rpz.action = "local" needs rpz.ipv4 and/or rpz.ipv6 (the stop page)')
        if self.zone == ".":
            raise ValueError("rpz.zone cannot be the root")
        self.export_action(self.export.target)  # an impossible export is a configuration error
        return self

    def export_action(self, target: str) -> str:
        """The action a zone file for `target` gets; ValueError when it cannot be enforced."""
        chosen = self.export.action
        if chosen is None:
            chosen = self.action
            if chosen not in TARGET_ACTIONS[target]:
                if not (self.ipv4 or self.ipv6):
                    raise ValueError(
                        f"Knot Resolver ignores rpz.action = {chosen!r} (it cannot follow a CNAME "
                        "to another name, so it would block nothing): set rpz.ipv4 and/or "
                        'rpz.ipv6 (the stop page) for action "local", or rpz.export.action = '
                        '"nxdomain"'
                    )
                chosen = "local"
        if chosen not in TARGET_ACTIONS[target]:
            raise ValueError(
                f"rpz.export.action = {chosen!r}: Knot Resolver cannot enforce it (it ignores "
                'a CNAME to another name); use "local", "nxdomain" or "nodata"'
            )
        if chosen == "local" and not (self.ipv4 or self.ipv6):
            raise ValueError('action "local" needs rpz.ipv4 and/or rpz.ipv6 (the stop page)')
        return chosen


class RpzConfig(SyncConfig):
    """What `resolver rpz` reads: [sync], [rails] and [rpz]."""

    rpz: RpzSection

    @model_validator(mode="before")
    @classmethod
    def _ignore_resolver_sections(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in RESOLVER_SECTIONS}
        return data

    def resolve_paths(self, base: Path) -> RpzConfig:
        config = super().resolve_paths(base)
        rpz = config.rpz
        secret = rpz.transfer.tsig_secret_file
        if secret is not None and not secret.is_absolute():
            transfer = rpz.transfer.model_copy(update={"tsig_secret_file": base / secret})
            rpz = rpz.model_copy(update={"transfer": transfer})
        output = rpz.export.output
        if output is not None and not output.is_absolute():
            rpz = rpz.model_copy(
                update={"export": rpz.export.model_copy(update={"output": base / output})}
            )
        return config.model_copy(update={"rpz": rpz})


def check_edition(config: RpzConfig, source: str) -> None:
    if config.sync.edition != "plain":
        raise ConfigError(
            f"{source}: sync.edition: is {config.sync.edition!r}, but an RPZ zone is made of "
            'names, which only the plain edition carries: set sync.edition = "plain" (your '
            "ASP account must be authorised for it by the authority)"
        )


def load_rpz_config(path: Path | str) -> RpzConfig:
    """Load and check rpz.toml; every error names the file and the key."""
    config = load_config(path, RpzConfig)
    check_edition(config, str(path))
    return config


def check_serve(config: RpzConfig, source: str) -> None:
    """What `serve` needs beyond `export`: a way for secondaries to transfer the zone."""
    if not config.rpz.transfer.anyone_can_transfer:
        raise ConfigError(
            f"{source}: rpz.transfer.tsig_secret_file: not set, and rpz.transfer.unsigned_allow "
            "is empty: no secondary could transfer the zone (set a TSIG key file, see "
            "`resolver rpz keygen`, or list the hosts that cannot sign)"
        )


def load_tsig_key(config: RpzConfig, source: str) -> dns.tsig.Key | None:
    """The transfer TSIG key, read from rpz.transfer.tsig_secret_file (None when unset)."""
    transfer = config.rpz.transfer
    path = transfer.tsig_secret_file
    if path is None:
        return None
    where = f"{source}: rpz.transfer.tsig_secret_file: {path}"
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not a base64 secret") from None
    if len(secret) < 16:
        raise ConfigError(f"{where}: the secret is {len(secret)} bytes; use at least 16 (32 best)")
    return dns.tsig.Key(transfer.tsig_key_name, secret, TSIG_ALGORITHMS[transfer.tsig_algorithm])
