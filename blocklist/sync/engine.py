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
from blocklist.notification import DeltaRef, Notification, check_notification, open_notification
from blocklist.state import ListState
from blocklist.sync.rails import Hold, Rails
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


@dataclass(frozen=True)
class Settings:
    pinned_roots: list[bytes]
    list_id: str
    edition: str
    max_entries: int


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
) -> Outcome:
    """Verify `data` (a notification bundle) and move from `current` to what it names.

    Raises SigningError (bad signature, unknown/expired key), FreshnessError (expired
    notification: keep `current`, alarm), RollbackError (older serial), ArtefactError (wrong
    list, bad files, checksum mismatch). `release` is the state checksum of a held update the
    operator has chosen to accept despite the rails.
    """
    note = open_notification(data, settings.pinned_roots, now)
    check_notification(
        note,
        now=now,
        list_id=settings.list_id,
        edition=settings.edition,
        current_serial=current.serial if current else None,
    )
    if current is not None and note.serial == current.serial:
        if note.state_checksum != current.checksum.hex():
            raise ArtefactError(
                "equivocation",
                f"serial {note.serial} is signed with two different states "
                f"({note.state_checksum[:16]}… and {current.checksum.hex()[:16]}…)",
            )
        if note.expires > current.expires:
            return Outcome(Result.REFRESHED, current.refreshed(note, data, now))
        return Outcome(Result.UNCHANGED, current)

    state: ListState | None = None
    path = ""
    if current is not None and str(current.notification.session) == note.session:
        refs = note.deltas_from(current.serial)
        if refs:
            try:
                state = await _apply_deltas(current.state, refs, note, fetch, settings)
                path = "deltas"
                if state.checksum.hex() != note.state_checksum:
                    state = None
            except ArtefactError:
                state = None  # a bad or missing delta: the snapshot is the way back
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
        return Outcome(Result.HELD, current, note.serial, hold, path, state.checksum)
    verified = VerifiedList(state, note, data, now, note.serial)
    return Outcome(Result.APPLIED, verified, note.serial, None, path)
