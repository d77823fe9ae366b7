"""SQLite database of the authority: the `Database` that owns connections, the write lock and
transactions, plus the schema migrations.

WAL mode lets readers work while a publication, an approval or a batch import writes: every
write runs in one `BEGIN IMMEDIATE` transaction on the single writer connection, under a lock,
so two officers acting at once are serialised, never interleaved; every read runs on a
connection of its own thread, in a read transaction (one consistent snapshot), and never waits
for the writer. Nothing outside this module touches a connection except through `write()` and
`read()`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: officers, ASPs, tokens, entries, batches, audit log, publications, acks
    """
    CREATE TABLE officers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('officer', 'approver', 'oversight', 'admin')),
        created INTEGER NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE asps (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        plain_allowed INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        officer_id INTEGER REFERENCES officers(id),
        asp_id INTEGER REFERENCES asps(id),
        label TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        revoked INTEGER,
        CHECK ((officer_id IS NULL) <> (asp_id IS NULL))
    );
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        created_by INTEGER NOT NULL REFERENCES officers(id),
        created INTEGER NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
        decided_by INTEGER REFERENCES officers(id),
        decided INTEGER,
        reason TEXT
    );
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind INTEGER NOT NULL,
        value TEXT NOT NULL,
        digest BLOB NOT NULL,
        category TEXT NOT NULL,
        hosting_country TEXT NOT NULL,
        evidence TEXT NOT NULL,
        notes TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        added_by INTEGER NOT NULL REFERENCES officers(id),
        approved_by INTEGER REFERENCES officers(id),
        batch_id INTEGER REFERENCES batches(id),
        created INTEGER NOT NULL,
        approved INTEGER,
        review_date INTEGER,
        delisted INTEGER,
        delisted_by INTEGER REFERENCES officers(id),
        status_reason TEXT,
        listed_serial INTEGER,
        delisted_serial INTEGER
    );
    -- One live entry per canonical expression; history keeps the dead ones.
    CREATE UNIQUE INDEX entries_live_digest ON entries(digest)
        WHERE status IN ('pending', 'active');
    CREATE INDEX entries_status ON entries(status);
    CREATE INDEX entries_batch ON entries(batch_id);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        entry_id INTEGER,
        detail TEXT NOT NULL,
        reason TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE publications (
        serial INTEGER PRIMARY KEY,
        session TEXT NOT NULL,
        time INTEGER NOT NULL,
        checksum BLOB NOT NULL,
        entry_count INTEGER NOT NULL,
        added INTEGER NOT NULL,
        removed INTEGER NOT NULL,
        actor TEXT NOT NULL
    );
    -- Set when an accepted batch was a deliberate bulk change; cleared by the next publication.
    CREATE TABLE meta_flags (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE acks (
        asp_id INTEGER NOT NULL REFERENCES asps(id),
        instance TEXT NOT NULL,
        serial INTEGER NOT NULL,
        checksum BLOB NOT NULL,
        time INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (asp_id, instance)
    );
    """,
    # 2: complaints forwarded by ASPs' stop pages, and their decisions
    """
    CREATE TABLE complaints (
        id INTEGER PRIMARY KEY,
        public_id TEXT NOT NULL UNIQUE,
        asp_id INTEGER NOT NULL REFERENCES asps(id),
        idempotency_key TEXT NOT NULL,
        entry_id INTEGER REFERENCES entries(id),
        host TEXT NOT NULL,
        role TEXT NOT NULL,
        reason TEXT NOT NULL,
        contact TEXT NOT NULL DEFAULT '',
        language TEXT NOT NULL DEFAULT '',
        received INTEGER NOT NULL,
        created INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('received', 'upheld', 'rejected')),
        decided_by INTEGER REFERENCES officers(id),
        decided INTEGER,
        decision_reasons TEXT,
        UNIQUE (asp_id, idempotency_key)
    );
    CREATE INDEX complaints_status ON complaints(status);
    CREATE INDEX complaints_decided ON complaints(asp_id, decided);
    """,
    # 3: lifecycle — takedowns at home, liveness checks, removal at source, lapsing
    """
    ALTER TABLE entries ADD COLUMN delist_cause TEXT;
    ALTER TABLE entries ADD COLUMN gone_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE entries ADD COLUMN last_gone INTEGER;
    ALTER TABLE entries ADD COLUMN last_check INTEGER;
    ALTER TABLE entries ADD COLUMN last_outcome TEXT;
    ALTER TABLE entries ADD COLUMN removed_at INTEGER;
    DROP INDEX entries_live_digest;
    CREATE UNIQUE INDEX entries_live_digest ON entries(digest)
        WHERE status IN ('pending', 'active', 'removal_pending', 'takedown');
    CREATE INDEX entries_check_due ON entries(status, last_check);
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        time INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('online', 'gone', 'unknown')),
        detail TEXT NOT NULL,
        http_status INTEGER,
        redirect TEXT,
        address TEXT
    );
    CREATE INDEX checks_entry ON checks(entry_id, time);
    CREATE TABLE takedowns (
        entry_id INTEGER PRIMARY KEY REFERENCES entries(id),
        recipient TEXT NOT NULL,
        sent INTEGER NOT NULL,
        deadline INTEGER NOT NULL,
        recorded_by INTEGER NOT NULL REFERENCES officers(id),
        escalated INTEGER,
        escalated_by INTEGER REFERENCES officers(id)
    );
    CREATE TABLE partner_notices (
        id INTEGER PRIMARY KEY,
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        partner TEXT NOT NULL,
        reference TEXT NOT NULL DEFAULT '',
        sent INTEGER NOT NULL,
        recorded_by INTEGER NOT NULL REFERENCES officers(id)
    );
    """,
    # 4: who created or confirmed whom (no sock-puppet approvers), role changes awaiting a
    # second person, token revocation reasons, stronger removal evidence, complaint tickets
    """
    ALTER TABLE officers ADD COLUMN created_by INTEGER REFERENCES officers(id);
    ALTER TABLE officers ADD COLUMN confirmed_by INTEGER REFERENCES officers(id);
    ALTER TABLE officers ADD COLUMN confirmed INTEGER;
    ALTER TABLE officers ADD COLUMN pending_role TEXT;
    ALTER TABLE officers ADD COLUMN requested_by INTEGER REFERENCES officers(id);
    ALTER TABLE officers ADD COLUMN deactivated INTEGER;
    ALTER TABLE asps ADD COLUMN deactivated INTEGER;
    ALTER TABLE tokens ADD COLUMN revoked_by TEXT;
    ALTER TABLE tokens ADD COLUMN revoke_reason TEXT;
    ALTER TABLE entries ADD COLUMN strong_gone_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE checks ADD COLUMN evidence TEXT;
    ALTER TABLE complaints ADD COLUMN ticket TEXT;
    CREATE INDEX complaints_ticket ON complaints(ticket);
    """,
    # delisting requests: a manual delisting takes a second person (independent of the others,
    # so it may take any place in this list)
    """
    CREATE TABLE delist_requests (
        id INTEGER PRIMARY KEY,
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        requested_by INTEGER NOT NULL REFERENCES officers(id),
        requested INTEGER NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected', 'superseded')),
        decided_by INTEGER REFERENCES officers(id),
        decided INTEGER,
        decision_reason TEXT
    );
    -- At most one open request per entry (and one confirmed: a delisted entry stays delisted).
    CREATE UNIQUE INDEX delist_requests_open ON delist_requests(entry_id)
        WHERE status IN ('pending', 'confirmed');
    CREATE INDEX delist_requests_status ON delist_requests(status);
    """,
    # the web console's sign-in (password hash, TOTP secret, failures) and sessions
    # (independent of the others)
    """
    CREATE TABLE console_credentials (
        officer_id INTEGER PRIMARY KEY REFERENCES officers(id),
        password_hash TEXT,
        totp_secret TEXT,
        enabled INTEGER NOT NULL DEFAULT 0,
        setup_hash BLOB,
        setup_expires INTEGER,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER,
        last_totp_step INTEGER
    );
    CREATE TABLE console_sessions (
        id INTEGER PRIMARY KEY,
        session_hash BLOB NOT NULL UNIQUE,
        officer_id INTEGER NOT NULL REFERENCES officers(id),
        csrf TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        revoked INTEGER
    );
    CREATE INDEX console_sessions_officer ON console_sessions(officer_id);
    """,
    # external feeds — their trust, their current items (provenance: feed + feed's own id),
    # local exclusions, and which batch or entry a feed brought in
    """
    CREATE TABLE feeds (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL CHECK (source IN ('cordon', 'https', 'file')),
        format TEXT NOT NULL CHECK (format IN ('text', 'csv', 'cordon')),
        policy TEXT NOT NULL CHECK (policy IN ('review', 'trusted')),
        url TEXT NOT NULL DEFAULT '',
        trust TEXT NOT NULL DEFAULT '{}',
        period INTEGER NOT NULL,
        created_by INTEGER NOT NULL REFERENCES officers(id),
        created INTEGER NOT NULL,
        -- A trusted feed lists without an approver: a second person confirms it first.
        confirmed_by INTEGER REFERENCES officers(id),
        confirmed INTEGER,
        etag TEXT NOT NULL DEFAULT '',
        last_modified TEXT NOT NULL DEFAULT '',
        cursor TEXT NOT NULL DEFAULT '{}',
        last_refresh INTEGER,
        last_attempt INTEGER,
        last_error TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        stale INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE feed_items (
        feed_id INTEGER NOT NULL REFERENCES feeds(id),
        digest BLOB NOT NULL,
        kind INTEGER NOT NULL,
        value TEXT,
        ref TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('linked', 'held', 'excluded')),
        entry_id INTEGER REFERENCES entries(id),
        reason TEXT,
        PRIMARY KEY (feed_id, digest)
    );
    CREATE INDEX feed_items_digest ON feed_items(digest);
    CREATE INDEX feed_items_entry ON feed_items(entry_id);
    CREATE TABLE feed_exclusions (
        feed_id INTEGER NOT NULL REFERENCES feeds(id),
        digest BLOB NOT NULL,
        value TEXT NOT NULL,
        reason TEXT NOT NULL,
        excluded_by INTEGER NOT NULL REFERENCES officers(id),
        time INTEGER NOT NULL,
        PRIMARY KEY (feed_id, digest)
    );
    ALTER TABLE entries ADD COLUMN feed_id INTEGER REFERENCES feeds(id);
    ALTER TABLE entries ADD COLUMN feed_ref TEXT;
    ALTER TABLE batches ADD COLUMN feed_id INTEGER REFERENCES feeds(id);
    """,
]


def connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # an approval acknowledged must survive power loss
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema up to date; each migration and its version bump commit together."""
    version = schema_version(conn)
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this program ({len(migrations)})"
        )
    for number in range(version, len(migrations)):
        with transaction(conn):
            for statement in _split(migrations[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
    return schema_version(conn)


def _split(script: str) -> Iterator[str]:
    # executescript() would commit implicitly; run statements one by one inside our transaction.
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Database:
    """One SQLite file: a writer connection behind a lock, and one reader connection per thread.

    `write()` is re-entrant: a step that runs inside a caller's transaction (delisting inside a
    complaint decision) joins it. `read()` inside `write()` on the same thread reads through the
    writer, so it sees the transaction's own changes.
    """

    def __init__(
        self,
        path: Path | str,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[str] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self._writer = connect(self.path)
        try:
            migrate(self._writer, migrations)
        except BaseException:
            self._writer.close()
            raise
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    def now(self) -> int:
        return int(self.clock())

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the database is closed")
            if self._depth:
                self._depth += 1
                try:
                    yield self._writer
                finally:
                    self._depth -= 1
                return
            self._writer.execute("BEGIN IMMEDIATE")
            self._owner, self._depth = threading.get_ident(), 1
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            else:
                self._writer.execute("COMMIT")
            finally:
                self._owner, self._depth = None, 0

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        if self._owner == threading.get_ident():
            yield self._writer
            return
        conn = self._reader()
        depth = getattr(self._local, "depth", 0)
        if depth:  # a read inside a read joins its snapshot
            yield conn
            return
        conn.execute("BEGIN")
        self._local.depth = 1
        try:
            yield conn
        finally:
            self._local.depth = 0
            conn.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the database is closed")
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        # Under the write lock: a write still running in a worker thread finishes first.
        with self._lock:
            self._closed = True
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
