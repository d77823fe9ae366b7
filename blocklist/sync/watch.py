"""Following the persisted list from another process (resolver workers, the stop page).

The sync follower is the only writer of `state.bin`; readers notice a new file (by inode and
mtime), load and re-verify it off the event loop, then hand the new list to their callback,
which swaps one reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from blocklist.errors import ArtefactError
from blocklist.sync import verified as persist
from blocklist.sync.verified import VerifiedList
from signing import SigningError

log = logging.getLogger("cordon.sync.watch")


class StateWatcher:
    def __init__(
        self,
        state_dir: Path,
        pinned_roots: list[bytes],
        on_change: Callable[[VerifiedList], Awaitable[None] | None],
        *,
        interval: float = 1.0,
        max_entries: int = 20_000_000,
    ) -> None:
        self.path = state_dir / persist.STATE_FILE
        self.state_dir = state_dir
        self.pinned_roots = pinned_roots
        self.on_change = on_change
        self.interval = interval
        self.max_entries = max_entries
        self.current: VerifiedList | None = None
        # Files that could not be loaded (the list in force stayed): something to wait for.
        self.refused = 0
        self._seen: tuple[int, int, int] | None = None
        self._task: asyncio.Task | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def check(self) -> bool:
        """Load the file if it changed since the last look; True when a new list was taken."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        try:
            loaded = await asyncio.to_thread(
                persist.load, self.state_dir, self.pinned_roots, self.max_entries
            )
        except (ArtefactError, SigningError, OSError) as exc:
            log.error("cannot load %s, keeping the list in force: %s", self.path, exc)
            self._seen = stamp
            self.refused += 1
            return False
        self._seen = stamp
        if loaded is None or (
            self.current
            and loaded.serial == self.current.serial
            and loaded.expires == self.current.expires
        ):
            return False
        self.current = loaded
        result = self.on_change(loaded)
        if asyncio.iscoroutine(result):
            await result
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("state watcher failed")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
