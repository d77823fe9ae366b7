"""authority.toml: what an authority configures, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from blocklist.config import ProtectedNameList, Section


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
    timeout: Annotated[float, Field(gt=0, le=120)] = 10
    user_agent: Annotated[str, Field(min_length=1, max_length=200)] = "Cordon-liveness/1"
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 20
    http_port: Annotated[int, Field(ge=1, le=65535)] = 80
    https_port: Annotated[int, Field(ge=1, le=65535)] = 443
    # Contact listed hosts whose addresses are private or loopback (tests and labs only).
    allow_private_addresses: bool = False


class ComplianceSection(Section):
    deadline_hours: Annotated[float, Field(gt=0)] = 24


class AuthorityConfig(Section):
    authority: AuthoritySection = AuthoritySection()
    api: ApiSection = ApiSection()
    publication: PublicationSection = PublicationSection()
    rails: RailsSection = RailsSection()
    compliance: ComplianceSection = ComplianceSection()
    lifecycle: LifecycleSection = LifecycleSection()
    liveness: LivenessSection = LivenessSection()

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
