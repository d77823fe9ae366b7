"""The updater: drives the pure `TrustedState` over a source of bytes for one update step.

No sockets or clocks here either: the caller passes the time and a `fetch(uri, size)` function
that returns at most `size` bytes (HTTP mirrors, or the in-memory source of tests). Deltas are
tried first when a chain leads from the list in force; any refused delta falls back to the
snapshot, and the reason is kept in the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from blocklist.errors import ArtefactError
from blocklist.state import ListState
from blocklist.sync.rails import Rails
from blocklist.sync.replay import ReplayState
from blocklist.sync.trusted import Candidate, Outcome, Result, Settings, TrustedState
from blocklist.sync.verified import VerifiedList

Fetch = Callable[[str, int], Awaitable[bytes]]

__all__ = ["Fetch", "Outcome", "Result", "Settings", "update"]


async def update(
    current: VerifiedList | None,
    data: bytes,
    fetch: Fetch,
    *,
    settings: Settings,
    rails: Rails,
    now: int,
    release: bytes | None = None,
    replay: ReplayState | None = None,
) -> Outcome:
    """Verify `data` (a notification bundle) and move from `current` to what it names.

    Raises SigningError (bad signature, unknown/expired/revoked key, superseded key set),
    FreshnessError (expired notification: keep `current`, alarm), RollbackError (older serial),
    ArtefactError (wrong list, bad files, checksum mismatch, serial jump). `release` is the
    state checksum of a held update the operator has chosen to accept despite the rails.
    `replay` is the replay state (blocklist/sync/replay.py).
    """
    if replay is None:
        # Without a replay file the list in force is the floor: never below what is enforced.
        replay = (
            ReplayState(session=current.notification.session, serial=current.serial)
            if current is not None
            else ReplayState()
        )
    trusted = TrustedState(current, replay, settings)
    checked = trusted.check(data, now)
    if isinstance(checked, Outcome):
        return checked
    cand: Candidate = checked
    state: ListState | None = None
    path, fallback = "", cand.fallback
    counts: tuple[int, int] | None = None
    if cand.deltas:
        try:
            blobs = [await fetch(ref.uri, ref.size) for ref in cand.deltas]
            (state, counts), path = trusted.from_deltas(cand, blobs), "deltas"
        except ArtefactError as exc:
            fallback = f"delta refused: {exc}"  # the snapshot is the way back
    if state is None:
        ref = cand.note.snapshot
        snapshot = await fetch(ref.uri, ref.size)
        bridge = [await fetch(d.uri, d.size) for d in cand.bridge]
        state, path = trusted.from_snapshot(cand, snapshot, bridge), "snapshot"
    return trusted.decide(
        cand,
        state,
        rails=rails,
        now=now,
        path=path,
        fallback=fallback,
        release=release,
        counts=counts if path == "deltas" else None,
    )
