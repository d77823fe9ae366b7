"""What `resolver sync` adds to each ack about how this ASP enforces: exemptions and log-only.

The sync follower acks every applied serial (and re-acks on each poll); its `ack_reports`
hook merges these facts into the ack's status, which the authority stores and shows in its
compliance view:

    "exemptions": every local exemption that overrides an entry of the list in force
                  (blocking.exempt_names), computed from the verified state itself
    "blocking":   {"mode": "log-only", "would_block": N, "by_entry": {...}} while the resolver
                  only counts: the counts come from `resolver serve`'s control endpoint

Both are bounded so the ack stays small (the authority keeps 4000 characters of status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from blocklist.sync.verified import VerifiedList
from resolver.config import ResolverConfig
from resolver.control import ControlError, base_url, get_json, status_url, top
from resolver.exemptions import Exemptions

log = logging.getLogger("cordon.sync")

LOG_ONLY_TOP = 20  # entries named in the ack; the total covers every one
REFRESH_SECONDS = 15.0


class ExemptionReport:
    """The exemptions in use against the verified list being acked (cached per state)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._for: bytes | None = None
        self._report: dict[str, Any] = {}

    def __call__(self, verified: VerifiedList) -> dict[str, Any]:
        if self._for != verified.checksum:
            self._report = Exemptions(self.names, verified.state).report()
            self._for = verified.checksum
        return {"exemptions": self._report}


class LogOnlyReport:
    """Log-only counts fetched from the resolver's control endpoint, refreshed in the background."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts: dict[str, Any] | None = None
        self.error: str | None = None

    async def refresh(self) -> None:
        try:
            status = await asyncio.to_thread(get_json, self.url, 5.0)
        except ControlError as exc:
            if self.error != str(exc):
                log.warning("log-only counts unavailable: %s", exc)
            self.error = str(exc)
            return
        self.error = None
        self.counts = status.get("log_only") or {}

    async def run(self, interval: float = REFRESH_SECONDS) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval)

    def __call__(self, verified: VerifiedList) -> dict[str, Any]:
        blocking: dict[str, Any] = {"mode": "log-only"}
        if self.counts is None:
            blocking["would_block"] = None  # the resolver has not answered yet
        else:
            blocking["would_block"] = self.counts.get("total", 0)
            blocking["by_entry"] = top(self.counts.get("by_entry", {}), LOG_ONLY_TOP)
        return {"blocking": blocking}


def install(follower: Any, config: ResolverConfig) -> LogOnlyReport | None:
    """Register the reports `config` asks for on `follower`; the log-only one is returned so
    the caller refreshes it (`run` in the background, or `refresh` once)."""
    if config.blocking.exempt_names:
        follower.ack_reports.append(ExemptionReport(config.blocking.exempt_names))
    if config.blocking.mode != "log-only":
        return None
    m = config.metrics
    report = LogOnlyReport(status_url(base_url(m.listen, m.port)))
    follower.ack_reports.append(report)
    return report


async def stop(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
