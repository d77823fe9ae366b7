"""The complaints outbox: a SQLite file (WAL, synchronous=FULL) on the stop page's host.

A complaint is committed here before the person is told it was received; the forwarder then
delivers it to the authority with the row's own idempotency key, so a crash at any point leads to
a retry that the authority recognises, never to a lost or doubled complaint. Delivery state
(attempts, next attempt time) lives in the row, so backoff survives restarts.

The person gets a ticket id and a secret; only a hash of the secret is stored. Once the
authority has a complaint, the outbox forgets its free text (reason and contact): what remains
is the ticket, the secret's hash, the address, the role and the status shown on the status page.
Tickets are deleted `keep_decided_days` after their decision.

Every call runs on one dedicated thread, so the event loop never waits on an fsync and SQLite
sees a single writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS complaints (
    ticket TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    form_nonce TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    entry_id INTEGER,
    host TEXT NOT NULL,
    role TEXT NOT NULL,
    reason TEXT NOT NULL,
    contact TEXT NOT NULL,
    language TEXT NOT NULL,
    received INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    complaint_id TEXT,
    forwarded INTEGER,
    status TEXT NOT NULL DEFAULT 'received',
    decided INTEGER,
    decision_reasons TEXT
);
CREATE INDEX IF NOT EXISTS complaints_due ON complaints (state, next_attempt);
CREATE INDEX IF NOT EXISTS complaints_remote ON complaints (complaint_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Delivery states of an outbox row.
PENDING = "pending"  # stored, not yet accepted by the authority
FORWARDED = "forwarded"  # the authority has it (complaint_id set)
UNDELIVERABLE = "undeliverable"  # the authority refused it for good (a bug or a bad token)


class StorageError(Exception):
    """The complaint could not be stored: the person must not be told it was received."""


class DuplicateForm(Exception):
    def __init__(self, ticket: str) -> None:
        super().__init__(ticket)
        self.ticket = ticket


@dataclass(frozen=True)
class NewComplaint:
    form_nonce: str
    entry_id: int | None
    host: str
    role: str
    reason: str
    contact: str
    language: str
    received: int


@dataclass(frozen=True)
class Ticket:
    ticket: str
    secret: str
    idempotency_key: str


def _code(groups: int) -> str:
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(groups))


def normalize_ticket(text: str) -> str:
    chars = _NOT_ALNUM.sub("", text.upper().translate(_CONFUSABLE))
    if len(chars) == 9 and chars[0] == "T":
        chars = chars[1:]
    if len(chars) != 8:
        return ""
    return f"T-{chars[:4]}-{chars[4:]}"


def normalize_secret(text: str) -> str:
    chars = _NOT_ALNUM.sub("", text.upper().translate(_CONFUSABLE))
    if len(chars) != 20:
        return ""
    return "-".join(chars[i : i + 4] for i in range(0, 20, 4))


def secret_hash(ticket: str, secret: str) -> bytes:
    return hashlib.sha256(f"cordon-ticket-v1\0{ticket}\0{secret}".encode()).digest()


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._conn: sqlite3.Connection | None = None
        self._pool.submit(self._open).result()

    # ------------------------------------------------------------ plumbing

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StorageError(f"{self.path}: outbox schema {version} is not {SCHEMA_VERSION}")
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    async def _run(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(_close).result()
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------ intake

    def _store(self, c: NewComplaint) -> Ticket:
        conn = self.conn
        try:
            row = conn.execute(
                "SELECT ticket FROM complaints WHERE form_nonce = ?", (c.form_nonce,)
            ).fetchone()
            if row is not None:
                raise DuplicateForm(row["ticket"])
            for _ in range(20):
                ticket = "T-" + _code(2)
                if not conn.execute(
                    "SELECT 1 FROM complaints WHERE ticket = ?", (ticket,)
                ).fetchone():
                    break
            else:  # pragma: no cover - 40 bits of ticket space would have to be nearly full
                raise StorageError("no free ticket id")
            secret = _code(5)
            key = secrets.token_urlsafe(24)
            conn.execute(
                "INSERT INTO complaints (ticket, secret_hash, form_nonce, idempotency_key,"
                " entry_id, host, role, reason, contact, language, received, next_attempt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ticket,
                    secret_hash(ticket, secret),
                    c.form_nonce,
                    key,
                    c.entry_id,
                    c.host,
                    c.role,
                    c.reason,
                    c.contact,
                    c.language,
                    c.received,
                    0.0,
                ),
            )
        except sqlite3.IntegrityError:
            row = conn.execute(
                "SELECT ticket FROM complaints WHERE form_nonce = ?", (c.form_nonce,)
            ).fetchone()
            if row is not None:
                raise DuplicateForm(row["ticket"]) from None
            raise StorageError("the complaint could not be stored") from None
        except sqlite3.Error as exc:
            raise StorageError(f"the complaint could not be stored: {exc}") from None
        return Ticket(ticket, secret, key)

    async def store(self, complaint: NewComplaint) -> Ticket:
        """Commit a complaint (durably: WAL + synchronous=FULL) and return its ticket."""
        return await self._run(self._store, complaint)

    # ------------------------------------------------------------ status page

    def _lookup(self, ticket: str, secret: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM complaints WHERE ticket = ?", (ticket,)).fetchone()
        expected = row["secret_hash"] if row is not None else secret_hash("T-0000-0000", "x")
        ok = hmac.compare_digest(expected, secret_hash(ticket, secret))
        if row is None or not ok:
            return None
        return {
            k: row[k]
            for k in (
                "ticket",
                "host",
                "entry_id",
                "role",
                "received",
                "state",
                "forwarded",
                "complaint_id",
                "status",
                "decided",
                "decision_reasons",
            )
        }

    async def lookup(self, ticket: str, secret: str) -> dict | None:
        """The status of a ticket, or None when ticket and secret do not match."""
        ticket, secret = normalize_ticket(ticket), normalize_secret(secret)
        if not ticket or not secret:
            return None
        return await self._run(self._lookup, ticket, secret)

    # ------------------------------------------------------------ forwarder

    def _due(self, now: float, limit: int) -> list[dict]:
        rows = self.conn.execute(
            "SELECT * FROM complaints WHERE state = ? AND next_attempt <= ?"
            " ORDER BY next_attempt, received LIMIT ?",
            (PENDING, now, limit),
        ).fetchall()
        return [dict(r) for r in rows]

    async def due(self, now: float, limit: int = 50) -> list[dict]:
        return await self._run(self._due, now, limit)

    def _next_due(self) -> float | None:
        row = self.conn.execute(
            "SELECT MIN(next_attempt) FROM complaints WHERE state = ?", (PENDING,)
        ).fetchone()
        return row[0]

    async def next_due(self) -> float | None:
        return await self._run(self._next_due)

    def _forwarded(self, ticket: str, answer: dict, now: int) -> None:
        # The free text has reached the authority: the ASP keeps no copy of it.
        self.conn.execute(
            "UPDATE complaints SET state = ?, complaint_id = ?, forwarded = ?, last_error = NULL,"
            " reason = '', contact = '', status = ?, decided = ?, decision_reasons = ?"
            " WHERE ticket = ?",
            (
                FORWARDED,
                answer["complaint_id"],
                now,
                answer.get("status") or "received",
                answer.get("decided"),
                answer.get("decision_reasons"),
                ticket,
            ),
        )

    async def mark_forwarded(self, ticket: str, answer: dict, now: int | None = None) -> None:
        await self._run(self._forwarded, ticket, answer, int(now or time.time()))

    def _reschedule(self, ticket: str, attempts: int, next_attempt: float, error: str) -> None:
        self.conn.execute(
            "UPDATE complaints SET attempts = ?, next_attempt = ?, last_error = ?"
            " WHERE ticket = ? AND state = ?",
            (attempts, next_attempt, error[:500], ticket, PENDING),
        )

    async def reschedule(self, ticket: str, attempts: int, next_attempt: float, error: str) -> None:
        await self._run(self._reschedule, ticket, attempts, next_attempt, error)

    def _undeliverable(self, ticket: str, error: str) -> None:
        self.conn.execute(
            "UPDATE complaints SET state = ?, last_error = ? WHERE ticket = ?",
            (UNDELIVERABLE, error[:500], ticket),
        )

    async def mark_undeliverable(self, ticket: str, error: str) -> None:
        await self._run(self._undeliverable, ticket, error)

    def _awaiting(self) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM complaints WHERE state = ? AND status = 'received'",
            (FORWARDED,),
        ).fetchone()[0]

    async def awaiting_decision(self) -> int:
        return await self._run(self._awaiting)

    def _decisions(self, items: list[dict]) -> int:
        changed = 0
        for item in items:
            cur = self.conn.execute(
                "UPDATE complaints SET status = ?, decided = ?, decision_reasons = ?"
                " WHERE complaint_id = ? AND (status != ? OR decided IS NOT ?"
                " OR decision_reasons IS NOT ?)",
                (
                    item["status"],
                    item.get("decided"),
                    item.get("decision_reasons"),
                    item["complaint_id"],
                    item["status"],
                    item.get("decided"),
                    item.get("decision_reasons"),
                ),
            )
            changed += cur.rowcount
        return changed

    async def record_decisions(self, items: list[dict]) -> int:
        return await self._run(self._decisions, items)

    def _get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    async def get_meta(self, key: str) -> str | None:
        return await self._run(self._get_meta, key)

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(self._set_meta, key, value)

    def _purge(self, decided_before: int) -> int:
        return self.conn.execute(
            "DELETE FROM complaints WHERE decided IS NOT NULL AND decided < ?", (decided_before,)
        ).rowcount

    async def purge(self, decided_before: int) -> int:
        return await self._run(self._purge, decided_before)

    # ------------------------------------------------------------ operators

    def _counts(self) -> dict[str, int]:
        out = {PENDING: 0, FORWARDED: 0, UNDELIVERABLE: 0, "decided": 0}
        for row in self.conn.execute("SELECT state, COUNT(*) FROM complaints GROUP BY state"):
            out[row[0]] = row[1]
        out["decided"] = self.conn.execute(
            "SELECT COUNT(*) FROM complaints WHERE status != 'received'"
        ).fetchone()[0]
        return out

    async def counts(self) -> dict[str, int]:
        return await self._run(self._counts)

    def counts_sync(self) -> dict[str, int]:
        return self._pool.submit(self._counts).result()

    def _rows(self) -> list[dict]:
        # For tests and `stoppage outbox`: delivery facts only, never the free text.
        rows = self.conn.execute(
            "SELECT ticket, entry_id, host, role, received, state, attempts, last_error,"
            " complaint_id, forwarded, status, decided FROM complaints ORDER BY received, ticket"
        ).fetchall()
        return [dict(r) for r in rows]

    def rows_sync(self) -> list[dict]:
        return self._pool.submit(self._rows).result()
