"""The verified list an ASP enforces, and its persistent copy on disk.

A `VerifiedList` is immutable: consumers swap one reference to move to a new one. On disk it is
one file, `state.bin`, replaced atomically (temp file, fsync, rename, fsync of the directory),
so a crash leaves either the old verified list or the new one, never a mix:

    magic "CSTA" | u8 version 1 | u64 verified_at | u32 length N | notification bundle (N bytes)
                 | snapshot of the state (the protocol's snapshot format)

On load the notification's signature is checked again against the pinned roots, the signer's
window at the notification's own signed `created` time (`verified_at` is not signed: trusting
it would let whoever can write the file bring back a key whose window had ended), the signer
must not be revoked by any key set the replay state (`replay.json`) records, and the
snapshot's checksum must equal the notification's. The file is mode 0640: readable by the
group the resolver and the stop page run in, not by every local user.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from blocklist.artefacts import decode_snapshot, encode_snapshot
from blocklist.errors import ArtefactError
from blocklist.files import read_stored, write_atomic
from blocklist.notification import Notification, open_trusted_notification
from blocklist.state import Edition, ListState
from blocklist.sync import replay as replay_file
from signing import CertificateError, decode_bundle, peek_key_id

STATE_FILE = "state.bin"
_MAGIC = b"CSTA"
_HEAD = struct.Struct(">4sBQI")


@dataclass(frozen=True)
class VerifiedList:
    state: ListState
    notification: Notification
    notification_bytes: bytes
    verified_at: int
    serial: int  # the serial of `state` (the notification may name the same serial)

    @property
    def checksum(self) -> bytes:
        return self.state.checksum

    @property
    def edition(self) -> Edition:
        return Edition.parse(self.notification.edition)

    @property
    def expires(self) -> int:
        return self.notification.expires

    def refreshed(self, notification: Notification, data: bytes, now: int) -> VerifiedList:
        """The same state vouched for by a newer signature (the authority re-signs hourly)."""
        return replace(self, notification=notification, notification_bytes=data, verified_at=now)


def save(directory: Path, verified: VerifiedList) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    note = verified.notification
    # Level 0: the state file is read far more often than it travels; skip compression work.
    snapshot = encode_snapshot(
        verified.state,
        note.list_id,
        verified.edition,
        uuid.UUID(note.session),
        verified.serial,
        level=0,
    )
    head = _HEAD.pack(_MAGIC, 1, verified.verified_at, len(verified.notification_bytes))
    write_atomic(
        directory / STATE_FILE,
        [head, verified.notification_bytes, snapshot],
        "state",
        replay_file.PRIVATE_MODE,
    )


def load(
    directory: Path, pinned_roots: list[bytes], max_entries: int, threshold: int = 1
) -> VerifiedList | None:
    """The persisted verified list, or None when there is none. Raises ArtefactError or
    SigningError when the file is damaged: the caller starts empty and says so loudly."""
    path = directory / STATE_FILE
    data = read_stored(path)
    if data is None:
        return None
    if len(data) < _HEAD.size:
        raise ArtefactError("truncated", f"{path} is truncated")
    magic, version, verified_at, length = _HEAD.unpack_from(data)
    if magic != _MAGIC or version != 1:
        raise ArtefactError("bad_magic", f"{path} is not a Cordon state file")
    end = _HEAD.size + length
    if end > len(data):
        raise ArtefactError("truncated", f"{path} is truncated")
    note_bytes = data[_HEAD.size : end]
    note, _trusted = open_trusted_notification(note_bytes, pinned_roots, None, threshold=threshold)
    try:
        replay = replay_file.load(directory)
    except ArtefactError:
        replay = None  # the follower reports a damaged replay file; the signature still holds
    signer = _signer_id(note_bytes)
    if replay is not None and signer in replay.revoked_ids:
        raise CertificateError("revoked", f"{path} is signed by key {signer.hex()}, since revoked")
    # Order is implied by the checksum comparison below (the checksum covers the order).
    info, state = decode_snapshot(data[end:], max_entries, check_order=False)
    if (info.list_id, info.edition.label, str(info.session)) != (
        note.list_id,
        note.edition,
        note.session,
    ):
        raise ArtefactError("mismatch", f"{path}: the state does not belong to its notification")
    if state.checksum.hex() != note.state_checksum or info.serial != note.serial:
        raise ArtefactError(
            "checksum_mismatch", f"{path}: the state does not match its notification"
        )
    return VerifiedList(state, note, note_bytes, verified_at, info.serial)


def _signer_id(bundle: bytes) -> bytes:
    return peek_key_id(decode_bundle(bundle, len(bundle))[1])
