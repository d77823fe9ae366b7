"""urlproxy.toml: the URL proxy an ASP runs for hosts that carry URL entries (docs/urlproxy.md).

Unknown sections and keys are refused; every key is documented in docs/urlproxy.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from blocklist.config import AddressList, LoopbackAddress, Section
from blocklist.sync.config import SyncSection
from resolver.config import parse_hostport

Seconds = Annotated[float, Field(gt=0, le=3600)]
Port = Annotated[int, Field(ge=0, le=65535)]


class ServerSection(Section):
    # The addresses the resolver's [url_proxy] ipv4/ipv6 point at.
    listen: Annotated[AddressList, Field(min_length=1)] = Field(
        default_factory=lambda: ["127.0.0.1"]
    )
    http_port: Port = 80
    # TLS passed through by SNI to the origin. Off: HTTPS to a diverted host fails (refused).
    tls_passthrough: bool = True
    https_port: Port = 443
    # TLS connections spliced at once; more are closed at once (plain HTTP is bounded by the
    # origin side's max_connections: requests beyond it wait for a free origin connection).
    max_tls_connections: Annotated[int, Field(ge=1)] = 4096
    # A connection without a complete request for this long (idle, or headers sent slowly)
    # is closed.
    keepalive_timeout: Seconds = 15.0
    # A request body that sends nothing for this long is cut (and its origin request with it).
    body_idle_timeout: Seconds = 30.0
    max_request_line: Annotated[int, Field(ge=1024, le=65536)] = 8190
    max_header_bytes: Annotated[int, Field(ge=1024, le=65536)] = 8190
    max_request_body: Annotated[int, Field(ge=0)] = 64 << 20
    # How long to wait for a TLS ClientHello before closing.
    hello_timeout: Seconds = 10.0
    # A TLS splice with no byte either way for this long is closed.
    tls_idle_timeout: Seconds = 300.0


class OriginSection(Section):
    # Recursive resolvers used to find the real origin: NEVER the Cordon resolver that diverts
    # to this proxy (it would answer with the proxy itself). Same form as upstream.servers.
    resolvers: Annotated[list[str], Field(min_length=1)]
    http_port: Port = 80
    https_port: Port = 443
    connect_timeout: Seconds = 5.0
    # No byte from the origin for this long: 504 before the response starts, else closed.
    read_timeout: Seconds = 30.0
    max_connections: Annotated[int, Field(ge=1)] = 1024
    max_response_header_bytes: Annotated[int, Field(ge=1024, le=65536)] = 16384
    # Origins on loopback, private, link-local or reserved addresses are refused (a list entry
    # must not turn the proxy into a way into the ASP's own network). Tests and demos only.
    allow_private_addresses: bool = False

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, values: list[str]) -> list[str]:
        for v in values:
            parse_hostport(v)  # the resolver's upstream.servers form: address[:port]
        return values


class StopPageSection(Section):
    # The stop page service: listed requests are passed to it with their Host and path, so the
    # notice, its languages, the complaint form and the hourly counters are the stop page's own.
    url: Annotated[str, Field(pattern=r"^http://[^/\s]+/?$")] = "http://127.0.0.1:80/"


class MetricsSection(Section):
    enabled: bool = True
    listen: LoopbackAddress = "127.0.0.1"
    # /metrics (Prometheus) and /healthz, which the resolver's health check reads.
    port: Port = 9156


class UrlProxyConfig(Section):
    """Every section `urlproxy` reads; unknown sections and keys are refused."""

    # The same section as resolver.toml: where `resolver sync` keeps the verified list.
    sync: SyncSection
    server: ServerSection = ServerSection()
    origin: OriginSection
    stop_page: StopPageSection = StopPageSection()
    metrics: MetricsSection = MetricsSection()

    def resolve_paths(self, base: Path) -> UrlProxyConfig:
        state_dir = self.sync.state_dir
        if not state_dir.is_absolute():
            state_dir = (base / state_dir).resolve()
        return self.model_copy(
            update={"sync": self.sync.model_copy(update={"state_dir": state_dir})}
        )
