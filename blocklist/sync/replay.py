"""Replay state: the newest session, serial and key-set version an ASP has accepted.

Kept apart from `state.bin` in a small file (`replay.json`, written atomically, fsynced, mode
0640), so losing or damaging the big state file cannot re-open a replay of an older, still
unexpired notification, nor bring back a key that a newer key set dropped or revoked.

`admit` is pure: a verified notification and what vouched for its signer in, the next replay
state out, or a refusal:
- a serial below the highest accepted (in any session: a new session continues the serials);
- a serial more than `max_jump` above it: a stolen key signing serial 2**63-1 would otherwise
  make every ASP refuse the genuine serials for ever;
- unless the root-signed key set names this session as its `recover_session` and this ASP has
  not yet taken that recovery: then the session is accepted whatever serial was recorded, which
  is how ASPs recover from a poisoned serial with no one deleting files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from blocklist.errors import ArtefactError
from blocklist.files import read_stored, write_atomic
from blocklist.notification import Notification
from signing import RollbackError, TrustedKeys
from signing.trust import TrustFloor

REPLAY_FILE = "replay.json"
PRIVATE_MODE = 0o640
DEFAULT_MAX_JUMP = 1_000_000


@dataclass(frozen=True)
class ReplayState:
    session: str | None = None
    serial: int = 0
    keyset_version: int = 0
    root_version: int = 0
    recovered_by: int = 0  # key-set version whose recovery session this ASP took
    revoked: tuple[str, ...] = field(default=())  # key ids (hex) any key set ever revoked

    @property
    def floor(self) -> TrustFloor:
        return TrustFloor(self.root_version, self.keyset_version)

    @property
    def revoked_ids(self) -> frozenset[bytes]:
        return frozenset(bytes.fromhex(k) for k in self.revoked)


def recovering(state: ReplayState, note: Notification, trusted: TrustedKeys) -> bool:
    """True when the key set in force tells this ASP to take `note`'s session afresh."""
    return (
        trusted.recover_session is not None
        and note.session == trusted.recover_session
        and state.session != note.session
        and state.recovered_by < trusted.keyset_version
    )


def admit(
    state: ReplayState, note: Notification, trusted: TrustedKeys, max_jump: int
) -> ReplayState:
    """The replay state after accepting `note`, or RollbackError / ArtefactError("serial_jump")."""
    recovered_by = state.recovered_by
    if recovering(state, note, trusted):
        recovered_by = trusted.keyset_version
    elif state.session is not None:
        if note.serial < state.serial or (
            note.serial == state.serial and note.session != state.session
        ):
            raise RollbackError(
                "rollback",
                f"serial {note.serial} (session {note.session}) is not newer than serial "
                f"{state.serial} (session {state.session}) already accepted",
            )
        if note.serial - state.serial > max_jump:
            raise ArtefactError(
                "serial_jump",
                f"serial {note.serial} jumps {note.serial - state.serial} ahead of serial "
                f"{state.serial}; at most {max_jump} is accepted (a stolen key could otherwise "
                "block the genuine serials for ever)",
            )
    revoked = sorted(set(state.revoked) | {k.hex() for k in trusted.revoked})
    return ReplayState(
        session=note.session,
        serial=note.serial,
        keyset_version=max(state.keyset_version, trusted.keyset_version),
        root_version=max(state.root_version, trusted.root_version),
        recovered_by=recovered_by,
        revoked=tuple(revoked),
    )


def ratchet(state: ReplayState, trusted: TrustedKeys) -> ReplayState:
    """Record a newer key set seen on a notification that was not (yet) applied."""
    return replace(
        state,
        keyset_version=max(state.keyset_version, trusted.keyset_version),
        root_version=max(state.root_version, trusted.root_version),
        revoked=tuple(sorted(set(state.revoked) | {k.hex() for k in trusted.revoked})),
    )


def encode(state: ReplayState) -> bytes:
    return json.dumps({"v": 1, **asdict(state)}, sort_keys=True).encode()


def save(directory: Path, state: ReplayState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / REPLAY_FILE, encode(state), "replay", PRIVATE_MODE)


def load(directory: Path) -> ReplayState | None:
    """The stored replay state, None when there is none; ArtefactError when it is damaged."""
    path = directory / REPLAY_FILE
    raw = read_stored(path)
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict) or obj.pop("v", None) != 1:
            raise ValueError("not a version 1 replay state")
        state = ReplayState(**{**obj, "revoked": tuple(obj.get("revoked", ()))})
        ints = (state.serial, state.keyset_version, state.root_version, state.recovered_by)
        if not all(isinstance(i, int) and i >= 0 for i in ints):
            raise ValueError("counters must be non-negative integers")
        if state.session is not None and not isinstance(state.session, str):
            raise ValueError("session must be text")
        state.revoked_ids  # noqa: B018 - validates the hex ids
    except (ValueError, TypeError) as exc:
        raise ArtefactError("replay_damaged", f"{path} is damaged: {exc}") from None
    return state
