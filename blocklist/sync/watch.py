"""Following the persisted list from another process (resolver workers, the stop page).

The sync follower is the only writer of `state.bin`; readers notice a new file (by inode and
mtime), load and re-verify it off the event loop, then hand the new list to their callback,
which swaps one reference. A file with a lower serial than the list taken is refused (a copy
put back by someone who can write the directory), unless it starts the session the replay
state names (a root-signed recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from blocklist.errors import ArtefactError
from blocklist.sync import replay as replay_file
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
        threshold: int = 1,
    ) -> None:
        self.path = state_dir / persist.STATE_FILE
        self.state_dir = state_dir
        self.pinned_roots = pinned_roots
        self.on_change = on_change
        self.interval = interval
        self.max_entries = max_entries
        self.threshold = threshold  # [sync] root_threshold: k of the pinned roots
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
                persist.load, self.state_dir, self.pinned_roots, self.max_entries, self.threshold
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
        if self.current is not None and not self._newer(loaded, self.current):
            self.refused += 1
            log.error(
                "%s holds serial %s, older than serial %s in force; keeping the list in force",
                self.path,
                loaded.serial,
                self.current.serial,
            )
            return False
        self.current = loaded
        result = self.on_change(loaded)
        if asyncio.iscoroutine(result):
            await result
        return True

    def _newer(self, loaded: VerifiedList, current: VerifiedList) -> bool:
        if loaded.notification.session == current.notification.session:
            return loaded.serial >= current.serial
        if loaded.serial > current.serial:
            return True
        try:
            replay = replay_file.load(self.state_dir)
        except ArtefactError:
            return False
        return replay is not None and replay.session == loaded.notification.session

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
