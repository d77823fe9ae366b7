"""resolver.toml: the ASP's resolver configuration.

[sync] and [rails] drive the list follower (`resolver sync`); [server], [acl], [upstream],
[cache], [blocking] and [metrics] drive the DNS service (`resolver serve`). Every key is
documented in docs/resolver.md; unknown sections and keys are refused.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from blocklist.config import (
    AddressList,
    LoopbackAddress,
    OptionalIPv4,
    OptionalIPv6,
    ProtectedNameList,
    Section,
)
from blocklist.domains import canonical_domain, is_public_suffix
from blocklist.hostport import parse_hostport
from blocklist.sync.config import SyncConfig
from resolver.check import BadName, normalize
from resolver.dnswire import MAX_EDE_TEXT, name_to_wire
from resolver.rpz.config import RpzSection
from resolver.tls import server_context

Seconds = Annotated[float, Field(gt=0, le=3600)]
Ttl = Annotated[int, Field(ge=0, le=604800)]

# Networks broader than these make the resolver answer a large part of the Internet: an open
# resolver is an amplification weapon, so such an ACL is refused rather than obeyed.
MIN_PREFIX = {4: 8, 6: 16}


def narrow_networks(values: list[str], advice: str) -> list[str]:
    """Networks (CIDR) none of which is broader than MIN_PREFIX; `advice` ends the error."""
    for v in values:
        net = ipaddress.ip_network(v, strict=False)
        if net.prefixlen < MIN_PREFIX[net.version]:
            raise ValueError(f"{v} is broader than /{MIN_PREFIX[net.version]}: {advice}")
    return values


class ServerSection(Section):
    # Addresses to bind, UDP and TCP. Loopback by default: an ASP adds its service addresses.
    listen: Annotated[AddressList, Field(min_length=1)] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"]
    )
    port: Annotated[int, Field(ge=0, le=65535)] = 53
    # Worker processes sharing the port (SO_REUSEPORT); each loads the list itself.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    tcp: bool = True
    # A TCP connection is closed when no complete query arrives for this long (RFC 7766 §6.2.3).
    tcp_idle_timeout: Seconds = 10.0
    tcp_max_connections: Annotated[int, Field(ge=1)] = 1024
    # Queries of one TCP connection answered concurrently (pipelining); reading pauses beyond.
    tcp_max_pipelined: Annotated[int, Field(ge=1, le=1024)] = 32
    # Client queries waiting for an upstream at once, per worker; beyond, SERVFAIL at once.
    max_pending: Annotated[int, Field(ge=1)] = 20000
    # Kernel receive buffer asked for on the UDP sockets (absorbs bursts).
    udp_receive_buffer: Annotated[int, Field(ge=65536, le=1 << 30)] = 4 << 20
    # How often each worker looks for a new state.bin written by `resolver sync`.
    list_poll_interval: Annotated[float, Field(gt=0, le=300)] = 1.0
    # Before any verified list exists: forward every query (and alarm), or refuse to resolve.
    without_list: Literal["forward", "servfail"] = "forward"
    # Answer UDP in the compiled fast path when it is built (false: the pure-Python reference).
    fast_path: bool = True
    # Answer use-application-dns.net NXDOMAIN: browsers that would turn on their own DNS over
    # HTTPS by default (Firefox) then keep using this resolver, and so the list.
    doh_canary: bool = True


class AclSection(Section):
    # Client networks allowed to query; loopback is always allowed. Everyone else is refused.
    allow: list[str] = Field(default_factory=list)
    # What a client outside the ACL gets: REFUSED (with EDE 18), or silence.
    refused: Literal["refuse", "drop"] = "refuse"
    # Also allow loopback clients (127.0.0.0/8, ::1); turn off only to test a refusal.
    allow_loopback: bool = True

    @field_validator("allow")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return narrow_networks(
            values, "that would be an open resolver; list the ASP's client networks instead"
        )


class UpstreamSection(Section):
    # The recursive resolvers Cordon forwards to, tried in this order ("addr" or "addr:port").
    # Required by `resolver serve` (here or as --upstream).
    servers: list[str] = Field(default_factory=list)
    # Seconds to wait for one upstream's answer before trying the next one.
    timeout: Annotated[float, Field(gt=0, le=30)] = 1.5
    # Upstream attempts per client query, across servers; 0 = one per server.
    attempts: Annotated[int, Field(ge=0, le=16)] = 0
    # An upstream that failed this many times in a row is skipped for `retry_after` seconds,
    # then a real query probes it again (skipped ones are still tried when all are down).
    max_failures: Annotated[int, Field(ge=1)] = 3
    retry_after: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # Queries sent from one UDP socket (one random source port) before it is replaced by a new
    # one; 1 = a fresh port for every query (slower: several system calls per query).
    socket_queries: Annotated[int, Field(ge=1, le=65536)] = 64
    # Timeout for the TCP retry of a truncated upstream answer.
    tcp_timeout: Annotated[float, Field(gt=0, le=60)] = 4.0
    # EDNS payload size advertised upstream.
    edns_payload: Annotated[int, Field(ge=512, le=4096)] = 1232
    # Per-zone forwarding: zone -> its own upstreams ("addr" or "addr:port"). A query goes to
    # the longest zone it is in (the zone itself or below), else to `servers`. Listed names
    # are blocked before any forwarding, whatever zone they are in.
    zones: dict[str, list[str]] = Field(default_factory=dict, max_length=1000)

    @field_validator("zones")
    @classmethod
    def _zones(cls, zones: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for zone, servers in zones.items():
            try:
                name = normalize(zone).decode()
            except BadName as exc:
                raise ValueError(f"zone {zone!r}: {exc}") from None
            if name in out:
                raise ValueError(f"zone {name!r} is given twice")
            if not 1 <= len(servers) <= 16:
                raise ValueError(f"zone {name!r}: give 1 to 16 servers")
            for v in servers:
                try:
                    parse_hostport(v)
                except ValueError as exc:
                    raise ValueError(f"zone {name!r}: {exc}") from None
            out[name] = servers
        return out

    @field_validator("servers")
    @classmethod
    def _servers(cls, values: list[str]) -> list[str]:
        for v in values:
            parse_hostport(v)
        return values

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [parse_hostport(v) for v in self.servers]


class CacheSection(Section):
    max_entries: Annotated[int, Field(ge=0)] = 200_000
    max_bytes: Annotated[int, Field(ge=0)] = 64 << 20
    min_ttl: Ttl = 0
    max_ttl: Ttl = 86400
    negative_max_ttl: Ttl = 3600  # RFC 2308 §5 suggests at most 3 hours
    servfail_ttl: Annotated[int, Field(ge=0, le=300)] = 0  # 0: upstream SERVFAILs are not cached
    # Serve-stale (RFC 8767): when every upstream fails, answer from an expired cache entry
    # that expired less than this many seconds ago (0 = off; RFC 8767 suggests 1 to 3 days).
    stale_max_age: Annotated[int, Field(ge=0, le=604800)] = 0
    # TTL of a stale answer (RFC 8767 §4 recommends 30 s); it carries EDE 3 (Stale Answer).
    stale_answer_ttl: Annotated[int, Field(ge=1, le=300)] = 30

    @model_validator(mode="after")
    def _order(self) -> CacheSection:
        if self.min_ttl > self.max_ttl:
            raise ValueError("cache.min_ttl is above cache.max_ttl")
        return self


class BlockingSection(Section):
    # Stop page addresses: A queries for listed names get `ipv4`, AAAA get `ipv6`; an empty value
    # gives NODATA for that type.
    ipv4: OptionalIPv4 = ""
    ipv6: OptionalIPv6 = ""
    ttl: Ttl = 60
    # Who ordered the block, for the EDE text; empty = the authority named in the signed list.
    authority: Annotated[str, Field(max_length=120)] = ""
    stop_page_url: Annotated[str, Field(max_length=120)] = ""
    # The whole EDE 16 EXTRA-TEXT; empty = "Blocked by order of {authority}; see {stop_page_url}".
    ede_text: str = ""
    # The SOA synthesized in NODATA answers (its serial is the list serial).
    soa_mname: str = "stop.cordon.invalid"
    soa_rname: str = "hostmaster.cordon.invalid"
    # "log-only": listed names are answered as if they were not, and counted per entry; the
    # counts go to the authority in the ack, so a rollout in progress shows there.
    mode: Literal["enforce", "log-only"] = "enforce"
    # Names this ASP keeps resolving (its own services): an entry on the name or above it does
    # not block the name or anything below it; the entry still blocks everything else. Every
    # exemption that overrides an entry is reported to the authority in the ack.
    exempt_names: Annotated[ProtectedNameList, Field(max_length=100)] = Field(default_factory=list)

    @field_validator("exempt_names")
    @classmethod
    def _exempt(cls, values: list[str]) -> list[str]:
        for v in values:
            if is_public_suffix(canonical_domain(v)):
                raise ValueError(
                    f"{v!r} is a public suffix: an exemption names this ASP's own services"
                )
        return values

    @field_validator("soa_mname", "soa_rname")
    @classmethod
    def _name(cls, v: str) -> str:
        name_to_wire(v)
        return v

    @field_validator("ede_text")
    @classmethod
    def _ede(cls, v: str) -> str:
        if len(v.encode()) > MAX_EDE_TEXT:
            raise ValueError(f"longer than {MAX_EDE_TEXT} bytes")
        return v

    def text(self, authority: str) -> bytes:
        """The EDE 16 EXTRA-TEXT, given the authority named in the list in force."""
        if self.ede_text:
            return self.ede_text.encode()
        who = self.authority or authority or "the national authority"
        text = f"Blocked by order of {who}"
        if self.stop_page_url:
            text += f"; see {self.stop_page_url}"
        return text.encode()[:MAX_EDE_TEXT]


class UrlProxySection(Section):
    """Diverting the hosts that carry URL entries (URLHOST entries) to the URL proxy."""

    # Addresses of `urlproxy serve`: A queries for a diverted host get `ipv4`, AAAA get `ipv6`
    # (empty: NODATA for that type). At least one is required.
    ipv4: OptionalIPv4 = ""
    ipv6: OptionalIPv6 = ""
    ttl: Ttl = 30
    # The proxy's health endpoint (its metrics port). Diverting happens only while it answers
    # 200 here; otherwise those hosts are forwarded as usual (fail open for URL entries).
    health_url: Annotated[str, Field(pattern=r"^http://")] = "http://127.0.0.1:9156/healthz"
    health_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    health_timeout: Annotated[float, Field(gt=0, le=30)] = 1.0
    # More URLHOST entries than this in the list: nothing is diverted and an alarm is raised
    # (cordon_resolver_divert_over_cap), so a bad list cannot pull a large part of the web
    # through the proxy.
    max_hosts: Annotated[int, Field(ge=0)] = 10000

    @model_validator(mode="after")
    def _addresses(self) -> UrlProxySection:
        if not self.ipv4 and not self.ipv6:
            raise ValueError("set ipv4 and/or ipv6: the addresses of the URL proxy")
        return self


class ProxySection(Section):
    # Senders (networks) trusted to prefix PROXY protocol v2 headers naming the real client:
    # your dnsdist or HAProxy. Empty: PROXY headers are refused from everyone.
    trusted: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("trusted")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return narrow_networks(values, "trust only the addresses of your load balancers")


class RateLimitSection(Section):
    # Per-client rate limiting (token bucket per address prefix); off by default.
    enabled: bool = False
    # Queries per second a client prefix may send on average, and the burst it may send at once.
    rate: Annotated[float, Field(gt=0, le=1_000_000)] = 100.0
    burst: Annotated[float, Field(ge=1, le=10_000_000)] = 200.0
    # Clients sharing a bucket: one IPv4 address by default, an IPv6 /56 (one subscriber).
    ipv4_prefix: Annotated[int, Field(ge=0, le=32)] = 32
    ipv6_prefix: Annotated[int, Field(ge=0, le=128)] = 56
    # Over the limit, every `slip`-th UDP query gets an empty truncated reply (TC=1, the client
    # retries over TCP) and the others are dropped; 0 = drop them all. TCP gets REFUSED.
    slip: Annotated[int, Field(ge=0, le=100)] = 2
    # Buckets kept at most; when full, a new client empties the table (memory stays bounded).
    max_clients: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000


class TlsSection(Section):
    # PEM certificate (chain: the server's first) and private key of the DoT and DoH
    # listeners; relative paths are read from the configuration file's directory. Reload
    # (SIGHUP) re-reads them, so a renewed certificate applies without a restart.
    certificate: Path | None = None
    private_key: Path | None = None
    # Refuse TLS clients that name no server (no SNI): off by default, since RFC 7858 clients
    # configured with an address, and opportunistic ones, send none.
    require_sni: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"


class StreamListener(Section):
    """What the DoT and DoH listeners share: where, and how many clients at once."""

    enabled: bool = False
    # Addresses to bind; empty = the same as server.listen.
    listen: AddressList = Field(default_factory=list)
    # Connections open at once per worker; a new one beyond is closed at once.
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    # A connection that completes no query (and no TLS handshake) for this long is closed.
    idle_timeout: Seconds = 10.0


class DotSection(StreamListener):
    """DNS over TLS (RFC 7858): the TCP framing of RFC 7766 inside TLS, ALPN "dot"."""

    port: Annotated[int, Field(ge=0, le=65535)] = 853


class DohSection(StreamListener):
    """DNS over HTTPS (RFC 8484): GET ?dns= and POST application/dns-message, HTTP/2 (ALPN
    "h2") and HTTP/1.1."""

    port: Annotated[int, Field(ge=0, le=65535)] = 443
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=100)] = "/dns-query"
    idle_timeout: Seconds = 30.0
    # HTTP/2 requests in flight on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    max_streams: Annotated[int, Field(ge=1, le=1000)] = 100


class MetricsSection(Section):
    enabled: bool = True
    # Local only: Prometheus scrapes it through the host (or a local agent), never clients.
    listen: LoopbackAddress = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9153
    # Distinct entry ids counted in cordon_resolver_blocked_by_entry_total; others go to "other".
    max_entry_labels: Annotated[int, Field(ge=0, le=1_000_000)] = 10000


class ResolverConfig(SyncConfig):
    """Every section `resolver` commands read; unknown sections and keys are refused."""

    server: ServerSection = ServerSection()
    acl: AclSection = AclSection()
    upstream: UpstreamSection = UpstreamSection()
    cache: CacheSection = CacheSection()
    blocking: BlockingSection = BlockingSection()
    metrics: MetricsSection = MetricsSection()
    # Absent: URLHOST entries are ignored and URL entries are not enforced by this resolver.
    url_proxy: UrlProxySection | None = None
    ratelimit: RateLimitSection = RateLimitSection()
    proxy: ProxySection = ProxySection()
    # The RPZ feed's section, so one file can drive `resolver sync` and `resolver rpz serve`.
    rpz: RpzSection | None = None
    # Encrypted DNS: the certificate, DNS over TLS and DNS over HTTPS (both off by default).
    tls: TlsSection = TlsSection()
    dot: DotSection = DotSection()
    doh: DohSection = DohSection()

    @model_validator(mode="after")
    def _tls_files(self) -> ResolverConfig:
        on = [name for name in ("dot", "doh") if getattr(self, name).enabled]
        if on and (self.tls.certificate is None or self.tls.private_key is None):
            raise ValueError(f"{' and '.join(on)} enabled: set tls.certificate and tls.private_key")
        for name in on:
            if getattr(self, name).port == 0 and self.server.workers > 1:
                raise ValueError(
                    f"{name}.port = 0 picks a port per process: give a port with "
                    f"server.workers = {self.server.workers}"
                )
        return self

    def resolve_paths(self, base: Path) -> ResolverConfig:
        """Relative paths from the file's directory; the certificate is loaded here, so a bad
        one is a configuration error (and a reload with it keeps the running one)."""
        config = super().resolve_paths(base)
        t = config.tls
        fixed = {
            k: (base / v).resolve()
            for k in ("certificate", "private_key")
            if (v := getattr(t, k)) is not None and not v.is_absolute()
        }
        if fixed:
            config = config.model_copy(update={"tls": t.model_copy(update=fixed)})
        if config.dot.enabled or config.doh.enabled:
            server_context(config.tls, ["dot"])  # raises ValueError naming the key and file
        return config

    @model_validator(mode="after")
    def _exempt_not_protected(self) -> ResolverConfig:
        protected = {canonical_domain(n) for n in self.rails.protected_names}
        both = sorted(protected & {canonical_domain(n) for n in self.blocking.exempt_names})
        if both:
            raise ValueError(
                f"blocking.exempt_names: {', '.join(both)} also in rails.protected_names; a "
                "protected name holds a list that blocks it, an exempted one applies the list "
                "without it: choose one"
            )
        return self
