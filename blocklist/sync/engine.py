"""One update step: from a notification's bytes to the next verified list, or a reason not to.

No sockets or clocks here: the caller passes the time and a `fetch(uri, size)` function that
returns at most `size` bytes. Everything fetched is checked against the signed notification
(size, SHA-256) before it is decoded, and the result's checksum against the signed one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from blocklist.artefacts import apply_delta, check_file, decode_delta, decode_snapshot
from blocklist.errors import ArtefactError
from blocklist.notification import (
    DeltaRef,
    Notification,
    check_notification,
    open_trusted_notification,
)
from blocklist.state import ListState
from blocklist.sync.rails import Hold, Rails
from blocklist.sync.replay import DEFAULT_MAX_JUMP, ReplayState, admit, ratchet
from blocklist.sync.verified import VerifiedList

Fetch = Callable[[str, int], Awaitable[bytes]]


class Result(Enum):
    APPLIED = "applied"  # a new serial is in force
    REFRESHED = "refreshed"  # same serial, newer signature (later expiry)
    UNCHANGED = "unchanged"  # nothing newer than what is in force
    HELD = "held"  # a genuine update the rails refused; the previous list stays in force


@dataclass(frozen=True)
class Outcome:
    result: Result
    verified: VerifiedList | None  # what is in force after this step
    candidate_serial: int | None = None
    hold: Hold | None = None
    path: str = ""  # "deltas" | "snapshot" | ""
    candidate_checksum: bytes | None = None
    replay: ReplayState | None = None  # to persist before what it admits is put in force
    fallback: str = ""  # why the deltas were not used and the snapshot was fetched


@dataclass(frozen=True)
class Settings:
    pinned_roots: list[bytes]
    list_id: str
    edition: str
    max_entries: int
    root_threshold: int = 1
    max_serial_jump: int = DEFAULT_MAX_JUMP


def _check_delta_header(delta, note: Notification, ref: DeltaRef) -> None:
    if (delta.list_id, delta.edition.label, str(delta.session)) != (
        note.list_id,
        note.edition,
        note.session,
    ) or (delta.from_serial, delta.to_serial) != (ref.from_serial, ref.to_serial):
        raise ArtefactError("mismatch", f"delta {ref.uri} is not the one the notification names")


async def _apply_deltas(
    state: ListState, refs: list[DeltaRef], note: Notification, fetch: Fetch, s: Settings
) -> ListState:
    for ref in refs:
        data = await fetch(ref.uri, ref.size)
        check_file(data, ref.size, ref.sha256, f"delta {ref.uri}")
        delta = decode_delta(data, s.max_entries)
        _check_delta_header(delta, note, ref)
        state = apply_delta(state, delta)
    return state


async def _from_snapshot(note: Notification, fetch: Fetch, s: Settings) -> ListState:
    ref = note.snapshot
    data = await fetch(ref.uri, ref.size)
    check_file(data, ref.size, ref.sha256, f"snapshot {ref.uri}")
    info, state = decode_snapshot(data, s.max_entries)
    if (info.list_id, info.edition.label, str(info.session), info.serial) != (
        note.list_id,
        note.edition,
        note.session,
        ref.serial,
    ):
        raise ArtefactError("mismatch", f"snapshot {ref.uri} is not the one the notification names")
    if ref.serial < note.serial:
        state = await _apply_deltas(state, note.deltas_from(ref.serial) or [], note, fetch, s)
    return state


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

    Raises SigningError (bad signature, unknown/expired key), FreshnessError (expired
    notification: keep `current`, alarm), RollbackError (older serial), ArtefactError (wrong
    list, bad files, checksum mismatch, serial jump). `release` is the state checksum of a held
    update the operator has chosen to accept despite the rails. `replay` is the replay state
    (blocklist/sync/replay.py): serials, key sets and root versions below it are refused.
    """
    replay = replay or ReplayState()
    note, trusted = open_trusted_notification(
        data,
        settings.pinned_roots,
        now,
        threshold=settings.root_threshold,
        floor=replay.floor,
    )
    check_notification(
        note, now=now, list_id=settings.list_id, edition=settings.edition, current_serial=None
    )
    admitted = admit(replay, note, trusted, settings.max_serial_jump)
    if (
        current is not None
        and note.serial == current.serial
        and note.session == current.notification.session
    ):
        if note.state_checksum != current.checksum.hex():
            raise ArtefactError(
                "equivocation",
                f"serial {note.serial} is signed with two different states "
                f"({note.state_checksum[:16]}… and {current.checksum.hex()[:16]}…)",
            )
        if note.expires > current.expires:
            return Outcome(Result.REFRESHED, current.refreshed(note, data, now), replay=admitted)
        return Outcome(Result.UNCHANGED, current, replay=admitted)

    state: ListState | None = None
    path = fallback = ""
    if current is None:
        fallback = "no list in force"
    elif str(current.notification.session) != note.session:
        fallback = f"new session {note.session}"
    elif not (refs := note.deltas_from(current.serial)):
        fallback = f"no delta chain from serial {current.serial}"
    else:
        try:
            state = await _apply_deltas(current.state, refs, note, fetch, settings)
            path = "deltas"
            if state.checksum.hex() != note.state_checksum:
                state = None
                fallback = "the deltas built a state with another checksum"
        except ArtefactError as exc:
            state = None  # a bad or missing delta: the snapshot is the way back
            fallback = f"delta refused: {exc}"
    if state is None:
        state = await _from_snapshot(note, fetch, settings)
        path = "snapshot"
    if state.checksum.hex() != note.state_checksum:
        raise ArtefactError(
            "checksum_mismatch",
            f"serial {note.serial} built a state with checksum {state.checksum.hex()[:16]}…, "
            f"the notification says {note.state_checksum[:16]}…",
        )
    hold = rails.check(current.state if current else None, state, note.bulk_change)
    if hold is not None and release != state.checksum:
        held = ratchet(replay, trusted)
        return Outcome(
            Result.HELD, current, note.serial, hold, path, state.checksum, held, fallback
        )
    verified = VerifiedList(state, note, data, now, note.serial)
    return Outcome(
        Result.APPLIED, verified, note.serial, None, path, replay=admitted, fallback=fallback
    )
