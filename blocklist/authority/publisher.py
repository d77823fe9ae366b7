"""Writing the publication directory: each change the store decides becomes serial N+1 on disk.

Layout (served as-is by the authority's HTTP API or by any static web host / CDN)::

    <dir>/hashed/notification.bin                  signed bundle; the only file ever rewritten
    <dir>/hashed/snapshot-<session>-<serial>.bin    immutable
    <dir>/hashed/delta-<session>-<from>-<to>.bin    immutable
    <dir>/plain/…                                   the same for the plain edition

URIs in a notification are bare file names, relative to the notification's directory.

Commit protocol. Every file is written to a temp file in its own directory, fsynced, renamed
over its name, and the directory is fsynced. Within a publication the immutable files come
first (hashed, then plain), then hashed/notification.bin, then plain/notification.bin. The
rename of hashed/notification.bin is the commit point of a serial:
- before it, no notification names the new files, so a crash leaves the previous serial fully
  servable; the leftovers have deterministic names and are overwritten by the retry or
  garbage-collected;
- after it, the serial is out (hashed ASPs may already hold it, and serials never go back), so
  `load` rolls a lagging plain edition forward from the plain files, which were durable before
  the commit, and signs its notification at once. The editions therefore never drift more than
  one serial apart, even across repeated crashes.

Fast path (lagging snapshot). Encoding a 1M-entry snapshot takes seconds per edition, too slow
for a 10-entry change. For a list of `sync_snapshot_limit` entries or more, `publish` writes only
the two deltas and the notifications; these keep naming the previous snapshot
(SnapshotRef.serial < serial) together with the delta chain from it, which the notification
model requires and every ASP client follows. `compact()` (run by the caller in a worker thread
right after `publish`) then encodes the current snapshots without holding the lock, writes
them, and re-signs the notifications to name them. Publishes may run while a compaction
encodes; the compacted snapshot then still shortens their chain. The first serial of a session
has no older snapshot, so it is always written synchronously, as is any publication whose
bridge would grow past MAX_LISTED_DELTAS. The hot path also never touches plain values: the
change is applied to the hashed columns (~20 ms for 1M entries, against ~300 ms for the tuple
of values), and the values are brought up to date from the logged changes in one pass when
needed (by `compact`, a synchronous snapshot, or the `state` property).

Deltas listed in a notification: the bridge from its snapshot (always), then older deltas of the
same session, newest first, while their total size stays below the snapshot's size.

Garbage collection, after each publish and new session: a snapshot or delta file is deleted only
when no notification signed for the current or the previous serial names it (the previous
serial's files stay for a client that read its notification a moment ago), and it is not being
written by a running compaction. Bridge deltas are always named by the current notification,
so they are never collected while needed.

Single writer: one Publisher per directory. Calls are serialised by a lock; the class is
synchronous and meant to be called from a worker thread of the async API server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import operator
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from blocklist.artefacts import (
    Delta,
    apply_delta,
    check_file,
    decode_delta,
    decode_snapshot,
    encode_delta,
    encode_snapshot,
    make_delta,
)
from blocklist.crash import checkpoint
from blocklist.digests import DIGEST_SIZE
from blocklist.errors import ArtefactError
from blocklist.files import fsync_dir, write_atomic
from blocklist.notification import (
    MAX_NOTIFICATION_SIZE,
    AuditHead,
    DeltaRef,
    Notification,
    SnapshotRef,
    open_notification,
    sign_notification,
)
from blocklist.state import ID_SIZE, MAX_ENTRY_ID, Edition, Entry, Kind, ListState
from signing import (
    HEADER_SIZE,
    SIGNATURE_SIZE,
    PayloadType,
    SigningError,
    decode_bundle,
    peek_key_id,
)
from signing.trust import peek_keyset

log = logging.getLogger(__name__)
_by_digest = operator.attrgetter("digest")

NOTIFICATION_FILE = "notification.bin"
RECOVERED_FILE = ".recovered"  # recovery sessions already started (signing/trust.py)
EDITIONS = (Edition.HASHED, Edition.PLAIN)  # also the write order: hashed commits first
SYNC_SNAPSHOT_LIMIT = 50_000  # below this many entries, encoding a snapshot is cheap enough
MAX_LISTED_DELTAS = 512  # well inside the notification's 1024 deltas and 256 KiB

_ARTEFACT_NAME = re.compile(
    r"^(?:snapshot-[0-9a-f-]{36}-[0-9]+|delta-[0-9a-f-]{36}-[0-9]+-[0-9]+)\.bin$"
)
_TEMP_NAME = re.compile(r"^\.(?:notification|snapshot-.+|delta-.+)\.bin\.[0-9a-f]{16}\.tmp$")
_LIST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Crash tests arm one of CRASH_POINTS (see blocklist/crash.py).
# In the order a synchronous publish passes them (the fast path skips the snapshots).
CRASH_POINTS = (
    "hashed/delta.tmp", "hashed/delta", "hashed/snapshot.tmp", "hashed/snapshot",
    "plain/delta.tmp", "plain/delta", "plain/snapshot.tmp", "plain/snapshot",
    "hashed/notification.tmp", "hashed/notification",  # the commit point
    "plain/notification.tmp", "plain/notification", "gc",
)  # fmt: skip


class PublisherError(Exception):
    """The publication directory cannot be read back or written as asked."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Published:
    serial: int
    session: uuid.UUID
    checksum: bytes
    entry_count: int
    created: int


def snapshot_name(session: uuid.UUID | str, serial: int) -> str:
    return f"snapshot-{session}-{serial}.bin"


def delta_name(session: uuid.UUID | str, from_serial: int, to_serial: int) -> str:
    return f"delta-{session}-{from_serial}-{to_serial}.bin"


def _refs(note: Notification) -> set[str]:
    return {note.snapshot.uri, *(d.uri for d in note.deltas)}


def _select_deltas(candidates: Sequence[DeltaRef], snapshot: SnapshotRef) -> list[DeltaRef]:
    """The bridge from `snapshot` (mandatory), then older deltas while the total stays below the
    snapshot's size. `candidates` is a contiguous chain ending at the notification's serial."""
    chosen: list[DeltaRef] = []
    total = 0
    for ref in reversed(candidates):
        bridge = ref.to_serial > snapshot.serial
        if not bridge and (total + ref.size >= snapshot.size or len(chosen) >= MAX_LISTED_DELTAS):
            break
        chosen.append(ref)
        total += ref.size
    chosen.reverse()
    return chosen


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


Change = tuple[list[bytes], list[Entry]]


def _net_change(changes: Sequence[Change]) -> Change:
    """One (removed, added) pair with the effect of `changes` applied in turn."""
    removed: set[bytes] = set()
    added: dict[bytes, Entry] = {}
    for gone, new in changes:
        for d in gone:
            if added.pop(d, None) is None:  # else it was added within `changes`
                removed.add(d)
        for e in new:
            added[e.digest] = e
    return sorted(removed), sorted(added.values(), key=_by_digest)


def _materialize(plain: ListState, changes: Sequence[Change], target: ListState) -> ListState:
    """The plain state with the values for `target` (hashed): `plain` plus `changes`, in one
    pass over the values, checked column by column against `target` (a memcmp, no hashing)."""
    if changes:
        plain = plain.apply(*_net_change(changes))
    if (plain.digests, plain.ids, plain.kinds) != (target.digests, target.ids, target.kinds):
        raise PublisherError("internal", "plain values went out of step with the hashed state")
    return ListState(target.digests, target.ids, target.kinds, plain.values)  # share columns


def _build(entries: Sequence[Entry]) -> ListState:
    """A plain state from sorted, unique, checked entries (a bulk first publish)."""
    return ListState(
        b"".join(e.digest for e in entries),
        b"".join(e.entry_id.to_bytes(ID_SIZE, "big") for e in entries),
        bytes(int(e.kind) for e in entries),
        tuple(e.value for e in entries),  # type: ignore[misc]
    )


class Publisher:
    """Turns list changes into signed serials in a publication directory (see module doc)."""

    def __init__(
        self,
        directory: Path,
        list_id: str,
        authority: str,
        signing_key,
        certificates: Sequence[bytes],
        *,
        expiry: int = 86400,
        min_poll_interval: int = 60,
        clock: Callable[[], float] = time.time,
        pinned_root: bytes | None = None,
        sync_snapshot_limit: int = SYNC_SNAPSHOT_LIMIT,
        audit_head: Callable[[], AuditHead | None] = lambda: None,
    ) -> None:
        if not _LIST_ID.match(list_id):
            raise PublisherError(
                "bad_list_id", f"list id {list_id!r} is not [A-Za-z0-9._-]{{1,64}}"
            )
        if expiry < 1 or not 1 <= min_poll_interval <= 86400:
            raise PublisherError("bad_config", "expiry and min_poll_interval must be positive")
        self._dir = Path(directory)
        self._list_id = list_id
        self._authority = authority
        self._key = signing_key
        self._certs = list(certificates)
        self._expiry = int(expiry)
        self._min_poll = int(min_poll_interval)
        self._clock = clock
        self._pinned_root = pinned_root
        self._sync_limit = sync_snapshot_limit
        self._audit_head = audit_head  # read at each signing: notifications anchor the audit log
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        for edition in EDITIONS:
            (self._dir / edition.label).mkdir(parents=True, exist_ok=True)
        self._reset()
        self._pending: set[Path] = set()  # snapshots a running compact() is writing
        self._compacting = False
        with self._lock:
            self._load(clean_temp=True)  # nothing else writes yet: temp files are leftovers
        self.follow_recovery()

    def _reset(self) -> None:
        # The hashed columns are the truth for the current serial. Plain values are kept as a
        # plain state at `_plain_serial` plus the changes since (`_log`), and materialised only
        # when needed: applying a change to a tuple of 1M values costs ~0.3 s, the columns ~20 ms.
        self._hstate = ListState.empty()
        self._plain = ListState.empty(plain=True)
        self._plain_serial = 0
        self._log: list[tuple[int, list[bytes], list[Entry]]] = []
        self._serial = 0
        self._session: uuid.UUID | None = None
        self._notes: dict[Edition, Notification] = {}
        # Files named by notifications signed for the current / previous serial (GC keeps both).
        self._keep_cur: dict[Edition, set[str]] = {e: set() for e in EDITIONS}
        self._keep_prev: dict[Edition, set[str]] = {e: set() for e in EDITIONS}
        # Set while disk and memory may disagree (a failed write); the next call reloads.
        self._stale = False

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> ListState:
        """The current plain state (empty before the first publish)."""
        with self._lock:
            self._ensure_loaded()
            if self._log:
                self._adopt_plain(self._plain_now(), self._serial)
            return self._plain

    @property
    def hashed_state(self) -> ListState:
        """The current state without values (digests, ids, kinds): free, unlike `state`, which
        may first bring the plain values up to date (~0.3 s for 1M entries after a fast path)."""
        with self._lock:
            self._ensure_loaded()
            return self._hstate

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def needs_compact(self) -> bool:
        """True when a notification still names an older snapshot (run `compact`)."""
        return any(n.snapshot.serial < n.serial for n in self._notes.values())

    def load(self) -> Published | None:
        """Re-read the current state from disk (also done by the constructor)."""
        with self._lock:
            return self._load(clean_temp=False)

    def current(self) -> Published | None:
        with self._lock:
            self._ensure_loaded()
            return self._published()

    def publish(
        self, removed: Sequence[bytes], added: Sequence[Entry], *, bulk_change: bool = False
    ) -> Published:
        """Publish serial N+1 = the current state minus `removed` digests plus `added` entries."""
        with self._lock:
            self._ensure_loaded()
            removed_l, added_l = self._check_change(removed, added)
            base = self._hstate
            plain: ListState | None = None
            if len(base) == 0 and not removed_l:
                plain = _build(added_l)  # a bulk load needs no merge
                new = plain.hashed()
            else:
                new = base.apply(removed_l, added_l)
            first = self._session is None
            session = uuid.uuid4() if first else self._session
            assert session is not None
            serial = self._serial + 1
            sync = first or len(new) < self._sync_limit or self._bridge_too_long()
            if sync and plain is None:
                plain = self._plain_now((removed_l, added_l), new)
            notes: dict[Edition, Notification] = {}
            try:
                for edition in EDITIONS:
                    prev = self._notes.get(edition)
                    candidates: list[DeltaRef] = []
                    if prev is not None:
                        candidates = list(prev.deltas)
                        delta = make_delta(
                            base,
                            new,
                            self._list_id,
                            edition,
                            session,
                            serial - 1,
                            serial,
                            removed_l,
                            added_l,
                        )
                        candidates.append(self._write_delta(edition, delta))
                    if plain is not None:
                        snapshot = self._write_snapshot(edition, plain, session, serial)
                    else:
                        assert prev is not None
                        snapshot = prev.snapshot  # fast path: compact() writes the new one
                    notes[edition] = self._note(
                        edition, session, serial, new, snapshot, candidates, bulk_change
                    )
                self._commit(notes)
            except BaseException:
                self._stale = True
                raise
            self._hstate, self._serial, self._session = new, serial, session
            if plain is not None:
                self._adopt_plain(plain, serial)
            else:
                self._log.append((serial, removed_l, added_l))
            self._gc()
            return self._require_published()

    def new_session(self, session: uuid.UUID | None = None) -> Published:
        """Serial N+1 in a fresh session: same state, snapshots only, no deltas."""
        with self._lock:
            self._ensure_loaded()
            session = session or uuid.uuid4()
            serial = self._serial + 1
            plain = self._plain_now()
            try:
                notes = {
                    e: self._note(
                        e,
                        session,
                        serial,
                        self._hstate,
                        self._write_snapshot(e, plain, session, serial),
                        [],
                        False,
                    )
                    for e in EDITIONS
                }
                self._commit(notes)
            except BaseException:
                self._stale = True
                raise
            self._serial, self._session = serial, session
            self._adopt_plain(plain, serial)
            self._gc()
            return self._require_published()

    def resign(self) -> Published:
        """Re-sign both notifications for the current serial with fresh created/expires."""
        with self._lock:
            self._ensure_loaded()
            if not self._notes:
                raise PublisherError("nothing_published", "nothing has been published yet")
            now = self._now()
            notes = {
                e: n.model_copy(
                    update={
                        "created": now,
                        "expires": now + self._expiry,
                        "audit_head": self._audit_head(),
                    }
                )
                for e, n in self._notes.items()
            }
            try:
                self._commit(notes)
            except BaseException:
                self._stale = True
                raise
            return self._require_published()

    def rekey(self, signing_key, certificates: Sequence[bytes]) -> None:
        """Use a new online signing key from the next resign/publish on."""
        certs = list(certificates)
        with self._lock:
            if self._pinned_root is not None:
                # Refuse a key/chain mix-up now rather than at the next publish.
                probe = next(iter(self._notes.values()), None) or self._probe_note()
                self._sign(probe, signing_key, certs)
            self._key, self._certs = signing_key, certs
        self.follow_recovery()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` after each commit (publication sinks, blocklist/authority/sinks.py).
        Called under the publisher's lock: it must only wake a worker, never do I/O itself."""
        self._listeners.append(callback)

    def follow_recovery(self) -> Published | None:
        """Start, once, the session a root-signed recovery in the key set names: ASPs take that
        session whatever serial a stolen key made them record (signing/trust.py)."""
        keyset = peek_keyset(self._certs[-1]) if self._certs else None
        session = keyset.recover_session if keyset else None
        marker = self._dir / RECOVERED_FILE
        with self._lock:
            self._ensure_loaded()
            taken = marker.read_text().split() if marker.exists() else []
            if session is None or self._session is None or session in taken:
                return None
        published = self.new_session(uuid.UUID(session))
        write_atomic(marker, ("\n".join([*taken, session]) + "\n").encode(), "recovered")
        return published

    def compact(self) -> Published | None:
        """Write the snapshots for the current serial and re-sign the notifications to name
        them. Materialises the plain values and encodes without holding the lock, so publishes
        go on meanwhile (a concurrent call returns at once)."""
        with self._lock:
            self._ensure_loaded()
            if self._compacting or not self.needs_compact:
                return self._published()
            session, serial, target = self._session, self._serial, self._hstate
            assert session is not None
            plain_base, changes = self._plain, [(r, a) for _, r, a in self._log]
            todo = [e for e in EDITIONS if self._notes[e].snapshot.serial < serial]
            paths = {e: self._dir / e.label / snapshot_name(session, serial) for e in todo}
            self._pending.update(paths.values())
            self._compacting = True
        refs: dict[Edition, SnapshotRef] = {}
        plain: ListState | None = None
        try:
            plain = _materialize(plain_base, changes, target)
            for edition in todo:
                refs[edition] = self._write_snapshot(edition, plain, session, serial)
        finally:
            with self._lock:
                self._pending.difference_update(paths.values())
                self._compacting = False
                if len(refs) == len(todo) and not self._stale and self._session == session:
                    assert plain is not None
                    self._adopt_plain(plain, serial)
                    self._adopt_snapshots(refs)
        with self._lock:
            return self._published()

    # ------------------------------------------------------------------ writing

    def _plain_now(self, extra: Change | None = None, target: ListState | None = None) -> ListState:
        """The plain state at the current serial (plus `extra`, giving `target`). Under the lock."""
        changes = [(r, a) for _, r, a in self._log] + ([extra] if extra else [])
        return _materialize(self._plain, changes, self._hstate if target is None else target)

    def _adopt_plain(self, plain: ListState, serial: int) -> None:
        # Under the lock; a compaction may finish after newer publishes, or after a reload.
        if serial > self._plain_serial:
            self._plain, self._plain_serial = plain, serial
            self._log = [c for c in self._log if c[0] > serial]

    def _adopt_snapshots(self, refs: dict[Edition, SnapshotRef]) -> None:
        # Under the lock. A publish may have happened since: the snapshot still shortens the
        # chain, since the current notification's deltas bridge from an older one.
        notes = {}
        for edition, ref in refs.items():
            cur = self._notes[edition]
            if cur.snapshot.serial >= ref.serial:
                continue
            notes[edition] = self._note(
                edition,
                uuid.UUID(cur.session),
                cur.serial,
                None,
                ref,
                cur.deltas,
                cur.bulk_change,
                checksum=cur.state_checksum,
                count=cur.entry_count,
            )
        if notes:
            try:
                self._commit(notes)
            except BaseException:
                self._stale = True
                raise

    def _check_change(
        self, removed: Sequence[bytes], added: Sequence[Entry]
    ) -> tuple[list[bytes], list[Entry]]:
        # Written to stay ~1 s for a 1M-entry first publish: a bad value would make the plain
        # snapshot undecodable for every plain ASP, so every added value is hashed here.
        removed_l = sorted(bytes(d) for d in removed)
        added_l = sorted(added, key=_by_digest)
        if len(set(removed_l)) != len(removed_l) or any(len(d) != DIGEST_SIZE for d in removed_l):
            raise PublisherError("bad_change", "removed digests must be 32 bytes, each once")
        if len({e.digest for e in added_l}) != len(added_l):
            raise PublisherError("bad_change", "an entry is added twice")
        sha256 = hashlib.sha256
        for e in added_l:
            if e.value is None or (
                # "" = held only as a digest (hashed-only feed): no plaintext to publish.
                e.value and sha256(e.value.encode("utf-8")).digest() != e.digest
            ):
                raise PublisherError(
                    "bad_change",
                    f"added entry {e.entry_id} has no value or one that does not match its digest",
                )
        if added_l:
            ids = [e.entry_id for e in added_l]
            if min(ids) < 0 or max(ids) > MAX_ENTRY_ID:
                raise PublisherError("bad_change", "an entry id is outside 0..2**64-1")
            if not {e.kind for e in added_l} <= set(Kind):
                raise PublisherError("bad_change", "an added entry has an unknown kind")
        return removed_l, added_l

    def _bridge_too_long(self) -> bool:
        return any(
            sum(d.to_serial > n.snapshot.serial for d in n.deltas) >= MAX_LISTED_DELTAS - 1
            for n in self._notes.values()
        )

    def _write_snapshot(
        self, edition: Edition, state: ListState, session: uuid.UUID, serial: int
    ) -> SnapshotRef:
        data = encode_snapshot(state, self._list_id, edition, session, serial)
        name = snapshot_name(session, serial)
        write_atomic(self._dir / edition.label / name, data, f"{edition.label}/snapshot")
        return SnapshotRef(uri=name, size=len(data), sha256=_sha256(data), serial=serial)

    def _write_delta(self, edition: Edition, delta: Delta) -> DeltaRef:
        data = encode_delta(delta)
        name = delta_name(delta.session, delta.from_serial, delta.to_serial)
        write_atomic(self._dir / edition.label / name, data, f"{edition.label}/delta")
        return self._delta_ref(name, data, delta)

    @staticmethod
    def _delta_ref(name: str, data: bytes, delta: Delta) -> DeltaRef:
        return DeltaRef(
            uri=name,
            size=len(data),
            sha256=_sha256(data),
            from_serial=delta.from_serial,
            to_serial=delta.to_serial,
        )

    def _now(self) -> int:
        return int(self._clock())

    def _note(
        self,
        edition: Edition,
        session: uuid.UUID,
        serial: int,
        state: ListState | None,
        snapshot: SnapshotRef,
        candidates: Sequence[DeltaRef],
        bulk_change: bool,
        *,
        checksum: str | None = None,
        count: int | None = None,
    ) -> Notification:
        now = self._now()
        try:
            return Notification(
                list_id=self._list_id,
                authority=self._authority,
                edition=edition.label,
                session=str(session),
                serial=serial,
                created=now,
                expires=now + self._expiry,
                state_checksum=checksum if state is None else state.checksum.hex(),
                entry_count=count if state is None else len(state),
                snapshot=snapshot,
                deltas=_select_deltas(candidates, snapshot),
                min_poll_interval=self._min_poll,
                bulk_change=bulk_change,
                audit_head=self._audit_head(),
            )
        except ValidationError as exc:  # a bug here, never the caller's input
            raise PublisherError("bad_notification", f"cannot build notification: {exc}") from exc

    def _probe_note(self) -> Notification:
        empty = SnapshotRef(uri="probe", size=1, sha256="0" * 64, serial=1)
        return self._note(Edition.HASHED, uuid.uuid4(), 1, ListState.empty(), empty, [], False)

    def _sign(self, note: Notification, key=None, certs: Sequence[bytes] | None = None) -> bytes:
        blob = sign_notification(note, key or self._key, self._certs if certs is None else certs)
        if len(blob) > MAX_NOTIFICATION_SIZE:
            raise PublisherError("oversized", f"notification would be {len(blob)} bytes")
        if self._pinned_root is not None:
            try:
                open_notification(blob, [self._pinned_root], note.created)
            except (SigningError, ArtefactError) as exc:
                raise PublisherError(
                    "bad_signing_setup",
                    f"a notification signed now would not verify against the pinned root: {exc}",
                ) from exc
        return blob

    def _commit(self, notes: dict[Edition, Notification]) -> None:
        # Sign everything first: a key problem must not leave the editions at different serials.
        blobs = {e: self._sign(n) for e, n in notes.items()}
        for edition in EDITIONS:
            if edition not in notes:
                continue
            path = self._dir / edition.label / NOTIFICATION_FILE
            write_atomic(path, blobs[edition], f"{edition.label}/notification")
            note, old = notes[edition], self._notes.get(edition)
            if old is None or old.serial != note.serial:
                self._keep_prev[edition] = self._keep_cur[edition]
                self._keep_cur[edition] = _refs(note)
            else:  # resign or compaction: keep what the replaced version named, too
                self._keep_cur[edition] |= _refs(note)
            self._notes[edition] = note
        for callback in self._listeners:
            callback()

    def _gc(self) -> None:
        """Delete snapshot/delta files no notification of the current or previous serial names."""
        for edition in EDITIONS:
            directory = self._dir / edition.label
            keep = self._keep_cur[edition] | self._keep_prev[edition]
            keep |= {p.name for p in self._pending if p.parent == directory}
            deleted = False
            try:
                with os.scandir(directory) as it:
                    names = [d.name for d in it]
                for name in names:
                    if _ARTEFACT_NAME.match(name) and name not in keep:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(directory / name)
                        deleted = True
            except OSError as exc:  # the publication is committed; a failed cleanup is not fatal
                log.warning("garbage collection in %s failed: %s", directory, exc)
            if deleted:
                fsync_dir(directory)
            checkpoint("gc")

    # ------------------------------------------------------------------ reading back

    def _ensure_loaded(self) -> None:
        if self._stale:
            self._load(clean_temp=False)

    def _published(self) -> Published | None:
        if self._session is None or Edition.PLAIN not in self._notes:
            return None
        return Published(
            serial=self._serial,
            session=self._session,
            checksum=self._hstate.checksum,
            entry_count=len(self._hstate),
            created=self._notes[Edition.PLAIN].created,
        )

    def _require_published(self) -> Published:
        published = self._published()
        assert published is not None
        return published

    def _load(self, clean_temp: bool) -> Published | None:
        """Recover the newest committed serial; roll a lagging edition forward and sign it."""
        self._reset()
        self._stale = True  # until the end: a failure here leaves the next call to retry
        if clean_temp:
            self._remove_temp_files()
        found = {e: self._read_notification(e) for e in EDITIONS}
        notes = {e: n for e, n in found.items() if n is not None}
        if not notes:
            self._stale = False
            return None
        lead = max(notes.values(), key=lambda n: n.serial)
        for edition, note in notes.items():
            self._check_present(edition, note)
            self._keep_cur[edition] = _refs(note)
        self._notes = dict(notes)
        plain = notes.get(Edition.PLAIN)
        state = self._rebuild(Edition.PLAIN, plain) if plain is not None else None
        repaired: dict[Edition, Notification] = {}
        if plain is None or plain.serial < lead.serial:
            state, repaired[Edition.PLAIN] = self._roll_forward(Edition.PLAIN, plain, state, lead)
        hashed = notes.get(Edition.HASHED)
        if hashed is None or hashed.serial < lead.serial:  # cannot happen by write order
            base = self._rebuild(Edition.HASHED, hashed) if hashed is not None else None
            _, repaired[Edition.HASHED] = self._roll_forward(Edition.HASHED, hashed, base, lead)
        assert state is not None
        if repaired:
            self._commit(repaired)
        self._plain, self._hstate = state, state.hashed()
        self._plain_serial = self._serial = lead.serial
        self._session = uuid.UUID(lead.session)
        self._stale = False
        return self._published()

    def _remove_temp_files(self) -> None:
        for edition in EDITIONS:
            directory = self._dir / edition.label
            for name in os.listdir(directory):
                if _TEMP_NAME.match(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(directory / name)

    def _read_notification(self, edition: Edition) -> Notification | None:
        path = self._dir / edition.label / NOTIFICATION_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            # Our own file: parse the payload, then (if a root is pinned) check it was validly
            # signed when it was created, so an expired certificate does not block a restart.
            _certs, signed = decode_bundle(data, MAX_NOTIFICATION_SIZE)
            peek_key_id(signed)
            if signed[4] != PayloadType.NOTIFICATION:
                raise ArtefactError("wrong_type", "the bundle does not hold a notification")
            note = Notification.model_validate_json(signed[HEADER_SIZE:-SIGNATURE_SIZE])
            if self._pinned_root is not None:
                verified = open_notification(data, [self._pinned_root], note.created)
                if verified != note:
                    raise ArtefactError("malformed", "verified payload differs")
        except (SigningError, ArtefactError, ValidationError) as exc:
            raise PublisherError("bad_notification", f"{path} cannot be read: {exc}") from exc
        if note.list_id != self._list_id or note.edition != edition.label:
            raise PublisherError(
                "wrong_list",
                f"{path} is for list {note.list_id!r} edition {note.edition}, "
                f"not {self._list_id!r} {edition.label}",
            )
        return note

    def _check_present(self, edition: Edition, note: Notification) -> None:
        for ref in [note.snapshot, *note.deltas]:
            path = self._dir / edition.label / ref.uri
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise PublisherError("missing_file", f"{path} is named but missing") from None
            if size != ref.size:
                raise PublisherError("corrupt_file", f"{path} is {size} bytes, not {ref.size}")

    def _read_ref(self, edition: Edition, ref: SnapshotRef | DeltaRef, what: str) -> bytes:
        path = self._dir / edition.label / ref.uri
        try:
            data = path.read_bytes()
            check_file(data, ref.size, ref.sha256, what)
        except (OSError, ArtefactError) as exc:
            raise PublisherError("corrupt_file", f"{path}: {exc}") from exc
        return data

    def _rebuild(self, edition: Edition, note: Notification) -> ListState:
        """The state a notification names: its snapshot plus the delta chain from it."""
        try:
            info, state = decode_snapshot(self._read_ref(edition, note.snapshot, "snapshot"))
            if (info.list_id, info.edition, str(info.session), info.serial) != (
                self._list_id,
                edition,
                note.session,
                note.snapshot.serial,
            ):
                raise ArtefactError("malformed", "snapshot header does not match notification")
            for ref in note.deltas_from(note.snapshot.serial) or []:
                delta = decode_delta(self._read_ref(edition, ref, "delta"))
                if (delta.from_serial, delta.to_serial) != (ref.from_serial, ref.to_serial):
                    raise ArtefactError("malformed", f"delta {ref.uri} has other serials")
                state = apply_delta(state, delta)
        except ArtefactError as exc:
            raise PublisherError(
                "corrupt_file", f"{edition.label} edition at serial {note.serial}: {exc}"
            ) from exc
        if state.checksum.hex() != note.state_checksum or len(state) != note.entry_count:
            raise PublisherError(
                "checksum_mismatch",
                f"{edition.label} files rebuild a state other than serial {note.serial}'s",
            )
        return state

    def _roll_forward(
        self,
        edition: Edition,
        old: Notification | None,
        base: ListState | None,
        lead: Notification,
    ) -> tuple[ListState, Notification]:
        """The lagging edition's notification at `lead.serial`, from the files written before
        the crash: its own delta from `old` (same session) and/or its snapshot at that serial.
        Both are checked against the lead's signed checksum (a leftover of an aborted earlier
        attempt cannot pass)."""
        session, serial = uuid.UUID(lead.session), lead.serial
        directory = self._dir / edition.label
        result: ListState | None = None
        snapshot = old.snapshot if old is not None else None
        candidates: list[DeltaRef] = []
        if old is not None and base is not None and old.session == lead.session:
            name = delta_name(session, old.serial, serial)
            with contextlib.suppress(OSError, ArtefactError):
                data = (directory / name).read_bytes()
                delta = decode_delta(data)
                state = apply_delta(base, delta)
                if state.checksum.hex() == lead.state_checksum:
                    candidates = [*old.deltas, self._delta_ref(name, data, delta)]
                    result = state
        name = snapshot_name(session, serial)
        with contextlib.suppress(OSError, ArtefactError):
            data = (directory / name).read_bytes()
            info, state = decode_snapshot(data)
            if (info.list_id, info.edition, info.session, info.serial) == (
                self._list_id,
                edition,
                session,
                serial,
            ) and state.checksum.hex() == lead.state_checksum:
                snapshot = SnapshotRef(
                    uri=name, size=len(data), sha256=_sha256(data), serial=serial
                )
                result = state
        if result is None or snapshot is None:
            raise PublisherError(
                "unrecoverable",
                f"the {edition.label} edition is at serial {old.serial if old else 0} and its "
                f"files for serial {serial} are missing or inconsistent",
            )
        note = self._note(edition, session, serial, result, snapshot, candidates, lead.bulk_change)
        return result, note
