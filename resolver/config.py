"""resolver.toml: the ASP's resolver configuration. [sync] and [rails] drive the list follower."""

from __future__ import annotations

from blocklist.sync.config import SyncConfig


class ResolverConfig(SyncConfig):
    """Every section `resolver` commands read; unknown sections and keys are refused."""
