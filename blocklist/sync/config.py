"""The [sync] and [rails] sections an ASP configures (shared by the resolver and the stop page)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from blocklist.config import ProtectedNameList, Section
from signing import SigningError, parse_public_key


class SyncSection(Section):
    authority_url: Annotated[str, Field(pattern=r"^https?://")] = "http://127.0.0.1:8440"
    # Where the notification lives; defaults to the authority API. One URL or an ordered list of
    # mirrors (static hosts, CDNs, the API), tried in turn: snapshot and delta URIs are resolved
    # relative to the URL that answered. The token is only ever sent to authority_url's origin.
    notification_url: str | Annotated[list[str], Field(max_length=16)] = ""
    token: str = ""
    token_file: Path | None = None
    # The root public key(s) pinned from the authority's key ceremony ("ed25519:…"), and how
    # many of them must sign a key set or a root rotation (k of n).
    root_keys: Annotated[list[str], Field(min_length=1, max_length=8)]
    root_threshold: Annotated[int, Field(ge=1, le=8)] = 1
    # A notification whose serial jumps further than this ahead of the last one is refused: a
    # stolen key cannot push every ASP to serial 2**63-1 in one step.
    max_serial_jump: Annotated[int, Field(ge=1)] = 1_000_000
    # With several mirrors: when the newest notification seen was signed longer ago than this
    # (the authority re-signs hourly), a mirror answering "nothing new" is passed over for the
    # next one, so a mirror that withholds updates delays them by this much, not until expiry.
    stale_mirror_minutes: Annotated[float, Field(gt=0)] = 180
    list_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "national"
    edition: Literal["hashed", "plain"] = "hashed"
    state_dir: Path = Path("sync-state")
    # How this machine appears in the authority's compliance report; empty = the host name.
    instance: Annotated[
        str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9._@-]{0,63})?$", validate_default=True)
    ] = ""
    long_poll_seconds: Annotated[int, Field(ge=0, le=600)] = 30
    request_timeout: Annotated[float, Field(gt=0, le=600)] = 30
    max_backoff_seconds: Annotated[float, Field(ge=1)] = 300
    # Alarm when no notification has been verified for this long (the list keeps being enforced).
    max_age_hours: Annotated[float, Field(gt=0)] = 26
    max_entries: Annotated[int, Field(ge=1)] = 20_000_000
    # Prometheus metrics of `resolver sync` on 127.0.0.1:<port>; 0 = not served (the resolver's
    # metrics port exports held updates and alarms from status.json either way).
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        return value or socket.gethostname().split(".")[0][:64] or "resolver"

    @field_validator("root_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                parse_public_key(key)
            except SigningError as exc:
                raise ValueError(str(exc)) from None
        return keys

    @field_validator("notification_url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"notification URL {url!r} must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _threshold(self) -> SyncSection:
        if self.root_threshold > len(self.root_keys):
            raise ValueError(
                f"root_threshold {self.root_threshold} is more than the "
                f"{len(self.root_keys)} root key(s) pinned"
            )
        return self

    @property
    def pinned_roots(self) -> list[bytes]:
        return [parse_public_key(k) for k in self.root_keys]

    def api_notification_url(self) -> str:
        return f"{self.authority_url.rstrip('/')}/v1/list/{self.edition}/notification"

    def notification_urls(self) -> list[str]:
        """The mirrors in the order they are tried; the authority API when none is set."""
        urls = [self.notification_url] if isinstance(self.notification_url, str) else []
        urls = [u for u in (urls or list(self.notification_url)) if u]
        return urls or [self.api_notification_url()]

    def resolved_notification_url(self) -> str:
        return self.notification_urls()[0]

    def bearer_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return ""


class RailsSection(Section):
    # Names the ASP never blocks: its own domains and major sites. An update that would block one
    # (the name or any name above it) is held, and the previous list stays in force.
    protected_names: ProtectedNameList = Field(default_factory=list)
    # Growth or shrink beyond this share of the list is held unless the authority marked the
    # publication as a deliberate bulk change; changes below `min_change` entries always pass.
    max_growth: Annotated[float, Field(ge=0)] = 0.25
    max_shrink: Annotated[float, Field(ge=0, le=1)] = 0.25
    min_change: Annotated[int, Field(ge=0)] = 1000
    # Churn, counted apart from the net size, so a wholesale replacement (or any churn that keeps
    # the size) is held whatever the list size: entries added and entries removed by one update,
    # each against an absolute limit and against a share of the previous list once above
    # `min_churn` entries.
    max_added: Annotated[int, Field(ge=0)] = 100_000
    max_removed: Annotated[int, Field(ge=0)] = 100_000
    max_added_share: Annotated[float, Field(ge=0)] = 0.25
    max_removed_share: Annotated[float, Field(ge=0, le=1)] = 0.25
    min_churn: Annotated[int, Field(ge=0)] = 100


class SyncConfig(Section):
    """What `resolver sync` reads: the [sync] and [rails] sections."""

    sync: SyncSection
    rails: RailsSection = RailsSection()

    @model_validator(mode="after")
    def _token_source(self) -> SyncConfig:
        if self.sync.token and self.sync.token_file:
            raise ValueError("set sync.token or sync.token_file, not both")
        return self

    def resolve_paths(self, base: Path) -> SyncConfig:
        def fix(p: Path | None) -> Path | None:
            return None if p is None or p.is_absolute() else (base / p).resolve()

        sync = self.sync.model_copy(
            update={
                "state_dir": fix(self.sync.state_dir) or self.sync.state_dir,
                "token_file": fix(self.sync.token_file) or self.sync.token_file,
            }
        )
        return self.model_copy(update={"sync": sync})
