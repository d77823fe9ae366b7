"""The authority's feed poller: refresh each polled feed when due, back off on failure, and
raise the freshness alarm for a feed not refreshed within its expected period.

Due = last attempt + poll interval, doubled per consecutive failure up to `max_backoff`. An
unchanged feed costs a conditional request (304) or, for a partner authority, one
notification. The alarm is a JSON log warning and an audit record `feed.stale`, once per
staleness; `blocklist feed list` and the API show `stale` while it lasts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blocklist.authority.feedsources.refresh import FeedRefused, refresh
from blocklist.authority.store import Store

log = logging.getLogger("cordon.authority.feeds")


@dataclass(frozen=True)
class PollPolicy:
    interval: float  # seconds between polls of one feed
    max_backoff: float
    tick: float  # how often the poller looks for due feeds


def due(feed: dict, now: int, policy: PollPolicy) -> bool:
    if feed["source"] == "file":
        return False
    if feed["last_attempt"] is None:
        return True
    wait = min(policy.interval * 2 ** min(feed["failures"], 30), policy.max_backoff)
    return now >= feed["last_attempt"] + wait


class FeedPoller:
    def __init__(
        self, store: Store, policy: PollPolicy, on_change: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        self.on_change = on_change
        self.passes = 0  # completed passes, for tests and health
        self._threads: set[asyncio.Future] = set()

    async def _offload(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A store call in a worker thread that outlives a cancelled pass: `wait_threads`
        lets the service close the database only once no thread is still using it."""
        future = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return await asyncio.shield(future)

    async def wait_threads(self) -> None:
        await asyncio.gather(*list(self._threads), return_exceptions=True)

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("feed poll pass failed")
            await asyncio.sleep(self.policy.tick)

    async def run_once(self) -> list[str]:
        """One pass: refresh what is due, then raise alarms. Returns the feeds refreshed."""
        now = self.store.now()
        names = await self._offload(self.store.feed_names)
        done = []
        for name in names:
            feed = await self._offload(self.store.feed_config, name)
            if not due(feed, now, self.policy):
                continue
            try:
                result = await refresh(self.store, name, self._offload)
            except FeedRefused as exc:
                log.warning(
                    "feed update refused", extra={"fields": {"feed": name, "error": str(exc)}}
                )
                continue
            done.append(name)
            if result is not None:
                log.info(
                    "feed updated",
                    extra={
                        "fields": result.to_dict()
                        | {"held": len(result.held), "refused": len(result.refused)}
                    },
                )
                if (result.batch_status == "accepted" or result.delisted) and self.on_change:
                    self.on_change()
        for name in await self._offload(self.store.mark_stale):
            log.warning(
                "feed is stale: not refreshed within its expected period",
                extra={"fields": {"feed": name}},
            )
        self.passes += 1
        return done
