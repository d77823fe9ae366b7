"""What an ASP trusts, as one pure object: bytes in, verified state out.

`TrustedState` holds the list in force and the replay state. Its methods take the bytes of a
notification, of deltas or of a snapshot, plus the time, and return a verified result or raise:
no sockets, no files, no clock reads (as python-tuf's TrustedMetadataSet). The thin updater in
`engine.py` drives it over a `Source` (HTTP mirrors, or the in-memory source of tests), and the
follower persists what it returns.

Order of checks (docs/protocol.md §7): trust documents and signature (against the replay
state's key-set and root floors), list and edition, freshness, replay (rollback, serial jump,
recovery), then files against their signed size and SHA-256, the result against the signed
checksum, then the rails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from signing import TrustedKeys


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


@dataclass(frozen=True)
class Candidate:
    """A verified notification newer than the list in force; its files are still to check."""

    note: Notification
    data: bytes
    keys: TrustedKeys
    admitted: ReplayState
    deltas: list[DeltaRef] | None  # the chain from the list in force, when there is one
    fallback: str  # why there is none

    @property
    def bridge(self) -> list[DeltaRef]:
        """Deltas from the snapshot's serial (a snapshot may lag the notification)."""
        ref = self.note.snapshot
        return self.note.deltas_from(ref.serial) or [] if ref.serial < self.note.serial else []


def _check_delta_header(delta, note: Notification, ref: DeltaRef) -> None:
    if (delta.list_id, delta.edition.label, str(delta.session)) != (
        note.list_id,
        note.edition,
        note.session,
    ) or (delta.from_serial, delta.to_serial) != (ref.from_serial, ref.to_serial):
        raise ArtefactError("mismatch", f"delta {ref.uri} is not the one the notification names")


@dataclass(frozen=True)
class TrustedState:
    current: VerifiedList | None
    replay: ReplayState
    settings: Settings

    def check(self, data: bytes, now: int) -> Candidate | Outcome:
        """Verify a notification. An Outcome when nothing needs fetching (same serial: refreshed
        or unchanged); else the Candidate whose files the updater fetches next."""
        s, current = self.settings, self.current
        note, keys = open_trusted_notification(
            data, s.pinned_roots, now, threshold=s.root_threshold, floor=self.replay.floor
        )
        check_notification(note, now=now, list_id=s.list_id, edition=s.edition, current_serial=None)
        admitted = admit(self.replay, note, keys, s.max_serial_jump)
        if current is not None and (note.serial, note.session) == (
            current.serial,
            current.notification.session,
        ):
            if note.state_checksum != current.checksum.hex():
                raise ArtefactError(
                    "equivocation",
                    f"serial {note.serial} is signed with two different states "
                    f"({note.state_checksum[:16]}… and {current.checksum.hex()[:16]}…)",
                )
            if note.expires > current.expires:
                refreshed = current.refreshed(note, data, now)
                return Outcome(Result.REFRESHED, refreshed, replay=admitted)
            return Outcome(Result.UNCHANGED, current, replay=admitted)
        deltas: list[DeltaRef] | None = None
        fallback = ""
        if current is None:
            fallback = "no list in force"
        elif current.notification.session != note.session:
            fallback = f"new session {note.session}"
        elif not (deltas := note.deltas_from(current.serial)):
            fallback, deltas = f"no delta chain from serial {current.serial}", None
        return Candidate(note, data, keys, admitted, deltas, fallback)

    def _apply(
        self, state: ListState, refs: Sequence[DeltaRef], blobs: Sequence[bytes], note
    ) -> tuple[ListState, tuple[int, int]]:
        added = removed = 0
        for ref, blob in zip(refs, blobs, strict=True):
            check_file(blob, ref.size, ref.sha256, f"delta {ref.uri}")
            delta = decode_delta(blob, self.settings.max_entries)
            _check_delta_header(delta, note, ref)
            state = apply_delta(state, delta)
            # An entry changed twice in the chain counts twice: the rails err on holding.
            added, removed = added + len(delta.added), removed + len(delta.removed)
        return state, (added, removed)

    @staticmethod
    def _check_result(state: ListState, note: Notification) -> ListState:
        if state.checksum.hex() != note.state_checksum:
            raise ArtefactError(
                "checksum_mismatch",
                f"serial {note.serial} built a state with checksum {state.checksum.hex()[:16]}…, "
                f"the notification says {note.state_checksum[:16]}…",
            )
        return state

    def from_deltas(
        self, cand: Candidate, blobs: Sequence[bytes]
    ) -> tuple[ListState, tuple[int, int]]:
        """The state the candidate's delta chain builds on the list in force, and the entries
        it adds and removes (for the rails)."""
        assert self.current is not None and cand.deltas is not None
        state, counts = self._apply(self.current.state, cand.deltas, blobs, cand.note)
        return self._check_result(state, cand.note), counts

    def from_snapshot(self, cand: Candidate, snapshot: bytes, bridge: Sequence[bytes]) -> ListState:
        """The state the candidate's snapshot (and the deltas bridging it) builds."""
        note, ref = cand.note, cand.note.snapshot
        check_file(snapshot, ref.size, ref.sha256, f"snapshot {ref.uri}")
        info, state = decode_snapshot(snapshot, self.settings.max_entries)
        if (info.list_id, info.edition.label, str(info.session), info.serial) != (
            note.list_id,
            note.edition,
            note.session,
            ref.serial,
        ):
            raise ArtefactError(
                "mismatch", f"snapshot {ref.uri} is not the one the notification names"
            )
        state, _ = self._apply(state, cand.bridge, bridge, note)
        return self._check_result(state, note)

    def decide(
        self,
        cand: Candidate,
        state: ListState,
        *,
        rails: Rails,
        now: int,
        path: str,
        fallback: str = "",
        release: bytes | None = None,
        counts: tuple[int, int] | None = None,
    ) -> Outcome:
        """Apply the rails to a verified new state: the new list, or a hold."""
        note, current = cand.note, self.current
        hold = rails.check(current.state if current else None, state, note.bulk_change, counts)
        if hold is not None and release != state.checksum:
            held = ratchet(self.replay, cand.keys)
            return Outcome(
                Result.HELD, current, note.serial, hold, path, state.checksum, held, fallback
            )
        verified = VerifiedList(state, note, cand.data, now, note.serial)
        return Outcome(
            Result.APPLIED,
            verified,
            note.serial,
            None,
            path,
            replay=cand.admitted,
            fallback=fallback,
        )

    def after(self, outcome: Outcome) -> TrustedState:
        """The trusted state once `outcome` is persisted."""
        return replace(
            self, current=outcome.verified or self.current, replay=outcome.replay or self.replay
        )
