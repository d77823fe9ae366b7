"""authority.toml: what an authority configures, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from blocklist.authority.liveness import BROWSER_USER_AGENT, parse_proxy
from blocklist.authority.sinks import SinkSection
from blocklist.config import ProtectedNameList, Section
from blocklist.hostport import parse_hostport


class AuthoritySection(Section):
    name: Annotated[str, Field(min_length=1, max_length=200)] = "National Authority"
    list_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "national"
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "FR"
    state_dir: Path = Path("authority-state")


class ApiSection(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8440
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    max_import_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    long_poll_max_seconds: Annotated[int, Field(ge=1, le=600)] = 60


class PublicationSection(Section):
    expiry_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24
    resign_minutes: Annotated[float, Field(gt=0)] = 60
    min_poll_interval: Annotated[int, Field(ge=1, le=86400)] = 60
    # Publish automatically this many seconds after a change that affects the list; 0 = off.
    auto_publish_seconds: Annotated[float, Field(ge=0)] = 0
    signing_key_days: Annotated[int, Field(ge=1, le=3650)] = 90
    # Static web roots or S3-compatible buckets the publication is pushed to, in commit order
    # (`[[publication.sinks]]`, blocklist/authority/sinks.py).
    sinks: list[SinkSection] = Field(default_factory=list, max_length=16)


class RailsSection(Section):
    protected_names: ProtectedNameList = Field(default_factory=list)
    bulk_share: Annotated[float, Field(gt=0, le=10)] = 0.10
    review_days: Annotated[int, Field(ge=1, le=3650)] = 90


class LifecycleSection(Section):
    takedown_hours: Annotated[float, Field(gt=0)] = 24
    check_interval_hours: Annotated[float, Field(ge=0)] = 24
    gone_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    gone_min_interval_hours: Annotated[float, Field(ge=0)] = 12
    removal_policy: Literal["auto", "confirm"] = "auto"
    review_grace_days: Annotated[float, Field(ge=0)] = 14
    # How far a takedown notice's sent time may be from the moment it is recorded.
    sent_tolerance_minutes: Annotated[float, Field(ge=0, le=24 * 60)] = 60
    # How often the service runs due liveness checks and lapses overdue entries; 0 = never
    # (then `blocklist lifecycle run` does it on demand).
    scheduler_minutes: Annotated[float, Field(ge=0)] = 10


class LivenessSection(Section):
    resolver_host: str = "127.0.0.1"
    resolver_port: Annotated[int, Field(ge=1, le=65535)] = 53
    # More resolvers, "ip" or "ip:port" ("[v6]:port"), asked alongside resolver_host. A name
    # gone from every one of two or more is strong evidence of removal (docs/authority.md).
    extra_resolvers: list[str] = Field(default_factory=list, max_length=8)
    # HTTP CONNECT proxy ("host:port") to check through, so sites do not see the authority's
    # addresses; empty: direct.
    proxy: Annotated[str, Field(max_length=300)] = ""
    timeout: Annotated[float, Field(gt=0, le=120)] = 10
    # An ordinary browser's by default: a checker that names itself invites cloaking.
    user_agent: Annotated[str, Field(min_length=1, max_length=200)] = BROWSER_USER_AGENT
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 20
    http_port: Annotated[int, Field(ge=1, le=65535)] = 80
    https_port: Annotated[int, Field(ge=1, le=65535)] = 443
    # Contact listed hosts whose addresses are private or loopback (tests and labs only).
    allow_private_addresses: bool = False

    @field_validator("extra_resolvers")
    @classmethod
    def _resolvers(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_hostport(value)
        return values

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str) -> str:
        if value:
            parse_proxy(value)
        return value

    @property
    def extra_resolver_addresses(self) -> list[tuple[str, int]]:
        return [parse_hostport(v) for v in self.extra_resolvers]


class ComplianceSection(Section):
    deadline_hours: Annotated[float, Field(gt=0)] = 24


class ConsoleSection(Section):
    """The officers' web console under /console/ (docs/console.md)."""

    enabled: bool = True
    # Secure cookies: "auto" when the request came over TLS; "always" behind a TLS proxy.
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    idle_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 30
    max_age_hours: Annotated[float, Field(gt=0, le=24 * 7)] = 12
    max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 15


class FeedsSection(Section):
    # Poll each feed that has a URL this often; a failed poll backs off, doubling up to
    # max_backoff_minutes. 0 = never poll (then `blocklist feed refresh` does it on demand).
    poll_minutes: Annotated[float, Field(ge=0)] = 15
    max_backoff_minutes: Annotated[float, Field(gt=0)] = 360
    # How often the poller looks for due feeds and stale ones.
    check_seconds: Annotated[float, Field(gt=0, le=3600)] = 30


class AuthorityConfig(Section):
    authority: AuthoritySection = AuthoritySection()
    api: ApiSection = ApiSection()
    publication: PublicationSection = PublicationSection()
    rails: RailsSection = RailsSection()
    compliance: ComplianceSection = ComplianceSection()
    lifecycle: LifecycleSection = LifecycleSection()
    liveness: LivenessSection = LivenessSection()
    console: ConsoleSection = ConsoleSection()
    feeds: FeedsSection = FeedsSection()

    def resolve_paths(self, base: Path) -> AuthorityConfig:
        state = self.authority.state_dir
        if not state.is_absolute():
            state = (base / state).resolve()
        return self.model_copy(
            update={"authority": self.authority.model_copy(update={"state_dir": state})}
        )

    @property
    def database(self) -> Path:
        return self.authority.state_dir / "authority.db"

    @property
    def publish_dir(self) -> Path:
        return self.authority.state_dir / "publish"

    @property
    def keys_dir(self) -> Path:
        return self.authority.state_dir / "keys"
