"""Waiting on an in-process RPZ service: its zone reaching a list serial, a list refused."""

from __future__ import annotations

import asyncio
import contextlib
import time

from resolver.rpz.service import RpzService


async def wait_serial(service: RpzService, list_serial: int, timeout: float = 10) -> None:
    """Until the zone is built from `list_serial` or a later one."""
    deadline = time.monotonic() + timeout
    while True:
        v = service.current
        if v is not None and v.list_serial >= list_serial:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"zone did not reach list serial {list_serial}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.updated.wait(), 0.2)
        service.updated.clear()


async def wait_refused(service: RpzService, count: int, timeout: float = 10) -> None:
    """Until `count` lists have been refused since the start: by the state watcher (unreadable,
    older than the list in force) or by the service (hashed edition, zone not buildable)."""
    deadline = time.monotonic() + timeout
    while (seen := service.lists_refused + service.watcher.refused) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} refused lists expected, saw {seen}")
        await asyncio.sleep(0.02)
