"""The authority's entry store: officers, ASPs, tokens, entries and their four-eyes lifecycle.

Every change runs in one `BEGIN IMMEDIATE` transaction together with its audit record, so an
approval is either fully recorded (entry state + audit) or not at all, and two approvers acting
on one entry at the same moment are serialised: the second one finds it already decided.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pycountry

from blocklist.authority import audit
from blocklist.authority.db import connect, migrate, transaction
from blocklist.authority.errors import (
    AuthorityError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)
from blocklist.authority.roles import ROLES, SYSTEM, Principal, require
from blocklist.domains import ProtectedNames
from blocklist.entries import entry_digest, guess_kind, parse_kind
from blocklist.errors import InvalidEntry
from blocklist.state import Entry, Kind

ENTRY_STATUSES = ("pending", "active", "removal_pending", "takedown", "rejected", "delisted")
# Statuses that hold the entry's canonical value (one live entry per value).
LIVE_STATUSES = ("pending", "active", "removal_pending", "takedown")
# Statuses whose entries are on the published list.
LISTED_STATUSES = ("active", "removal_pending")
LIVE_SQL = "(" + ", ".join(f"'{s}'" for s in LIVE_STATUSES) + ")"
LISTED_SQL = "(" + ", ".join(f"'{s}'" for s in LISTED_STATUSES) + ")"
MAX_TEXT = 2000
TOKEN_PREFIX = "cdn_"
DAY = 86400
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass
class EntryRecord:
    id: int
    kind: str
    value: str
    digest: str
    category: str
    hosting_country: str
    evidence: str
    notes: str
    status: str
    added_by: str
    approved_by: str | None
    batch_id: int | None
    created: int
    approved: int | None
    review_date: int | None
    delisted: int | None
    status_reason: str | None
    listed_serial: int | None
    delisted_serial: int | None
    delist_cause: str | None = None
    gone_count: int = 0
    last_check: int | None = None
    last_outcome: str | None = None
    removed_at: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImportLine:
    line: int
    raw: str
    kind: Kind | str | None = None  # a string is parsed per line, so a typo refuses one line
    hosting_country: str = ""
    evidence: str = ""
    category: str = "csam"
    notes: str = ""


@dataclass
class ImportReport:
    batch_id: int | None
    accepted: int
    refused: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PendingChanges:
    added: list[Entry]  # plain entries, sorted by digest
    removed: list[bytes]  # sorted digests
    added_ids: list[int]
    removed_ids: list[int]  # aligned with `removed`
    bulk: bool


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_country(code: str) -> str:
    code = code.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise Invalid(
            "invalid_country", f"hosting country {code!r} is not an ISO 3166-1 alpha-2 code"
        )
    return code


def clean_text(value: str, what: str, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise Invalid("missing_field", f"{what} is required")
    if len(value) > MAX_TEXT:
        raise Invalid("too_long", f"{what} is longer than {MAX_TEXT} characters")
    return value


class Store:
    def __init__(
        self,
        path: Path | str,
        *,
        protected: ProtectedNames | None = None,
        clock: Callable[[], float] = time.time,
        review_days: int = 90,
        bulk_share: float = 0.10,
        home_country: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        migrate(self.conn)
        self.protected = protected or ProtectedNames()
        self.clock = clock
        self.review_days = review_days
        self.bulk_share = bulk_share
        self.home_country = home_country
        # sqlite3 connections are not safe for concurrent use from several threads.
        self._lock = threading.RLock()
        # Token checks run on every request: a reader of their own (WAL lets it read while a
        # publication or an import writes), so authentication never waits for the writer.
        self._auth_conn = connect(self.path)
        self._auth_lock = threading.Lock()

    def initial_status(self, country: str) -> str:
        """Content hosted at home is taken down, not blocked: it starts as a tracked takedown."""
        return "takedown" if country == self.home_country else "pending"

    def close(self) -> None:
        # Under the lock: a publication still running in a worker thread finishes first.
        with self._lock:
            self.conn.close()
        with self._auth_lock:
            self._auth_conn.close()

    def now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------ auth

    require = staticmethod(require)

    def authenticate(self, token: str) -> Principal | None:
        with self._auth_lock:
            row = self._auth_conn.execute(
                "SELECT t.officer_id, t.asp_id, o.name AS oname, o.role, o.active AS oactive,"
                " a.name AS aname, a.plain_allowed, a.active AS aactive"
                " FROM tokens t LEFT JOIN officers o ON o.id = t.officer_id"
                " LEFT JOIN asps a ON a.id = t.asp_id"
                " WHERE t.token_hash = ? AND t.revoked IS NULL",
                (hash_token(token),),
            ).fetchone()
        if row is None:
            return None
        if row["officer_id"] is not None:
            if not row["oactive"]:
                return None
            return Principal("officer", row["officer_id"], row["oname"], row["role"])
        if not row["aactive"]:
            return None
        return Principal("asp", row["asp_id"], row["aname"], "", bool(row["plain_allowed"]))

    def _issue_token(self, officer_id: int | None, asp_id: int | None, label: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.conn.execute(
            "INSERT INTO tokens (token_hash, officer_id, asp_id, label, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (hash_token(token), officer_id, asp_id, label, self.now()),
        )
        return token

    # ------------------------------------------------------------------ officers and ASPs

    def _check_name(self, name: str, what: str) -> str:
        if not _NAME.match(name):
            raise Invalid(
                "invalid_name", f"{what} name {name!r} must be 1-64 letters, digits, . _ @ -"
            )
        return name

    def _add_caller(self, actor: Principal, kind: str, fields: dict) -> tuple[dict, str]:
        """Insert an officer or an ASP with its first API token, and audit it, in one go."""
        table, label = ("officers", "officer") if kind == "officer" else ("asps", "ASP")
        columns = ", ".join(fields)
        with self._lock, transaction(self.conn):
            try:
                cur = self.conn.execute(
                    f"INSERT INTO {table} ({columns}, created) VALUES"
                    f" ({', '.join('?' * len(fields))}, ?)",
                    (*(int(v) if isinstance(v, bool) else v for v in fields.values()), self.now()),
                )
            except sqlite3.IntegrityError:
                raise Conflict("exists", f"{label} {fields['name']!r} already exists") from None
            new_id = cur.lastrowid
            token = self._issue_token(
                new_id if kind == "officer" else None, new_id if kind == "asp" else None, "initial"
            )
            detail = {kind: fields["name"], **{k: v for k, v in fields.items() if k != "name"}}
            audit.append(
                self.conn, time=self.now(), actor=actor.label, action=f"{kind}.add", detail=detail
            )
        return {"id": new_id, **fields}, token

    def add_officer(self, actor: Principal, name: str, role: str) -> tuple[dict, str]:
        """Create an officer and a first API token (returned once, stored only as a hash)."""
        self.require(actor, "manage")
        self._check_name(name, "officer")
        if role not in ROLES:
            raise Invalid("invalid_role", f"role {role!r} is not one of {', '.join(ROLES)}")
        return self._add_caller(actor, "officer", {"name": name, "role": role})

    def list_officers(self, actor: Principal) -> list[dict]:
        self.require(actor, "read")
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, name, role, created, active FROM officers ORDER BY id"
            )
            return [dict(r) for r in rows]

    def add_asp(self, actor: Principal, name: str, plain_allowed: bool = False) -> tuple[dict, str]:
        self.require(actor, "manage")
        self._check_name(name, "ASP")
        return self._add_caller(actor, "asp", {"name": name, "plain_allowed": plain_allowed})

    def list_asps(self, actor: Principal) -> list[dict]:
        self.require(actor, "read")
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, name, plain_allowed, created, active FROM asps ORDER BY id"
            )
            return [{**dict(r), "plain_allowed": bool(r["plain_allowed"])} for r in rows]

    # ------------------------------------------------------------------ entries

    def _record(self, row: sqlite3.Row) -> EntryRecord:
        return EntryRecord(
            id=row["id"],
            kind=Kind(row["kind"]).name.lower(),
            value=row["value"],
            digest=bytes(row["digest"]).hex(),
            category=row["category"],
            hosting_country=row["hosting_country"],
            evidence=row["evidence"],
            notes=row["notes"],
            status=row["status"],
            added_by=row["added_by_name"],
            approved_by=row["approved_by_name"],
            batch_id=row["batch_id"],
            created=row["created"],
            approved=row["approved"],
            review_date=row["review_date"],
            delisted=row["delisted"],
            status_reason=row["status_reason"],
            listed_serial=row["listed_serial"],
            delisted_serial=row["delisted_serial"],
            delist_cause=row["delist_cause"],
            gone_count=row["gone_count"],
            last_check=row["last_check"],
            last_outcome=row["last_outcome"],
            removed_at=row["removed_at"],
        )

    _SELECT = (
        "SELECT e.*, a.name AS added_by_name, b.name AS approved_by_name FROM entries e"
        " JOIN officers a ON a.id = e.added_by LEFT JOIN officers b ON b.id = e.approved_by"
    )

    def _row(self, entry_id: int) -> sqlite3.Row:
        row = self.conn.execute(self._SELECT + " WHERE e.id = ?", (entry_id,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"entry {entry_id} does not exist")
        return row

    def get(self, actor: Principal, entry_id: int) -> EntryRecord:
        self.require(actor, "read")
        with self._lock:
            return self._record(self._row(entry_id))

    def list_entries(
        self,
        actor: Principal,
        *,
        status: str | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EntryRecord]:
        self.require(actor, "read")
        where, args = [], []
        if status:
            if status not in ENTRY_STATUSES:
                raise Invalid("invalid_status", f"unknown status {status!r}")
            where.append("e.status = ?")
            args.append(status)
        if search:
            where.append("(e.value LIKE ? OR e.evidence LIKE ?)")
            args += [f"%{search}%"] * 2
        sql = self._SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY e.id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self.conn.execute(sql, [*args, max(1, min(limit, 10000)), max(0, offset)])
            return [self._record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.conn.execute("SELECT status, count(*) FROM entries GROUP BY status")
            return {r[0]: r[1] for r in rows}

    def _canonical(self, raw: str, kind: Kind | None) -> tuple[Kind, str, bytes]:
        kind = kind or guess_kind(raw)
        try:
            value, digest = entry_digest(kind, raw, self.protected)
        except InvalidEntry as exc:
            raise Invalid("invalid_entry", str(exc), reason=exc.reason) from None
        return kind, value, digest

    def _insert_entry(
        self,
        actor: Principal,
        kind: Kind,
        value: str,
        digest: bytes,
        *,
        category: str,
        country: str,
        evidence: str,
        notes: str,
        batch_id: int | None,
    ) -> int:
        try:
            cur = self.conn.execute(
                "INSERT INTO entries (kind, value, digest, category, hosting_country, evidence,"
                " notes, status, added_by, batch_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    int(kind),
                    value,
                    digest,
                    category,
                    country,
                    evidence,
                    notes,
                    self.initial_status(country),
                    actor.id,
                    batch_id,
                    self.now(),
                ),
            )
        except sqlite3.IntegrityError:
            other = self.conn.execute(
                f"SELECT id, status FROM entries WHERE digest = ? AND status IN {LIVE_SQL}",
                (digest,),
            ).fetchone()
            raise Conflict(
                "duplicate",
                f"{value!r} is already on the list or pending (entry {other[0]}, {other[1]})",
                entry_id=other[0],
            ) from None
        return cur.lastrowid  # type: ignore[return-value]

    def add_entry(
        self,
        actor: Principal,
        raw: str,
        *,
        kind: Kind | None = None,
        hosting_country: str,
        evidence: str,
        category: str = "csam",
        notes: str = "",
    ) -> EntryRecord:
        self.require(actor, "add")
        kind, value, digest = self._canonical(raw, kind)
        country = check_country(hosting_country)
        evidence = clean_text(evidence, "evidence reference", required=True)
        notes = clean_text(notes, "notes")
        category = clean_text(category, "category", required=True)
        with self._lock, transaction(self.conn):
            entry_id = self._insert_entry(
                actor,
                kind,
                value,
                digest,
                category=category,
                country=country,
                evidence=evidence,
                notes=notes,
                batch_id=None,
            )
            audit.append(
                self.conn,
                time=self.now(),
                actor=actor.label,
                action="entry.add",
                entry_id=entry_id,
                detail={"kind": kind.name.lower(), "value": value},
            )
            return self._record(self._row(entry_id))

    def _decide_check(self, actor: Principal, row: sqlite3.Row, verb: str) -> None:
        if row["status"] != "pending":
            raise Conflict("not_pending", f"entry {row['id']} is {row['status']}, not pending")
        if row["added_by"] == actor.id and actor.kind == "officer":
            raise Forbidden(
                "four_eyes",
                f"entry {row['id']} was added by {actor.name}; another approver must {verb} it",
            )
        if row["batch_id"] is not None:
            raise Conflict(
                "in_batch",
                f"entry {row['id']} belongs to batch {row['batch_id']}; decide the batch",
            )

    def approve(self, actor: Principal, entry_id: int) -> EntryRecord:
        self.require(actor, "approve")
        with self._lock, transaction(self.conn):
            row = self._row(entry_id)
            self._decide_check(actor, row, "approve")
            now = self.now()
            self.conn.execute(
                "UPDATE entries SET status = 'active', approved_by = ?, approved = ?,"
                " review_date = ? WHERE id = ? AND status = 'pending'",
                (actor.id, now, now + self.review_days * DAY, entry_id),
            )
            audit.append(
                self.conn, time=now, actor=actor.label, action="entry.approve", entry_id=entry_id
            )
            return self._record(self._row(entry_id))

    def reject(self, actor: Principal, entry_id: int, reason: str) -> EntryRecord:
        self.require(actor, "approve")
        reason = clean_text(reason, "reason", required=True)
        with self._lock, transaction(self.conn):
            row = self._row(entry_id)
            self._decide_check(actor, row, "reject")
            self.conn.execute(
                "UPDATE entries SET status = 'rejected', approved_by = ?, approved = ?,"
                " status_reason = ? WHERE id = ?",
                (actor.id, self.now(), reason, entry_id),
            )
            audit.append(
                self.conn,
                time=self.now(),
                actor=actor.label,
                action="entry.reject",
                entry_id=entry_id,
                reason=reason,
            )
            return self._record(self._row(entry_id))

    def delist(self, actor: Principal, entry_id: int, reason: str) -> EntryRecord:
        """Take an entry off the list (the next publication removes it). A reason is required."""
        self.require(actor, "delist")
        reason = clean_text(reason, "reason", required=True)
        with self._lock, transaction(self.conn):
            self.delist_in_transaction(actor, entry_id, reason)
            return self._record(self._row(entry_id))

    def delist_in_transaction(
        self, actor: Principal, entry_id: int, reason: str, cause: str = "officer"
    ) -> None:
        """The delisting itself, for callers that already hold the lock and a transaction."""
        row = self._row(entry_id)
        if row["status"] not in LIVE_STATUSES:
            raise Conflict("not_listed", f"entry {entry_id} is {row['status']}; nothing to delist")
        self.conn.execute(
            "UPDATE entries SET status = 'delisted', delisted = ?, delisted_by = ?,"
            " status_reason = ?, delist_cause = ? WHERE id = ?",
            (self.now(), actor.id if actor.kind == "officer" else None, reason, cause, entry_id),
        )
        audit.append(
            self.conn,
            time=self.now(),
            actor=actor.label,
            action="entry.delist",
            entry_id=entry_id,
            reason=reason,
        )

    # ------------------------------------------------------------------ batches

    def import_batch(
        self,
        actor: Principal,
        lines: Iterable[ImportLine],
        source: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Queue many entries as one batch that another approver accepts or rejects as a whole.

        Lines that cannot be listed are reported with their reason; the rest form the batch.
        """
        self.require(actor, "add")
        refused: list[dict] = []
        good: list[tuple[ImportLine, Kind, str, bytes, str]] = []
        seen: dict[bytes, int] = {}
        for n, line in enumerate(lines, start=1):
            if progress and n % 1000 == 0:
                progress(1000)
            try:
                kind = line.kind
                if isinstance(kind, str):
                    try:
                        kind = parse_kind(kind) if kind.strip() else None
                    except InvalidEntry as exc:
                        raise Invalid("invalid_entry", str(exc), reason=exc.reason) from None
                if len(line.raw) > 8192:
                    raise Invalid("too_long", "value is longer than 8192 characters")
                kind, value, digest = self._canonical(line.raw, kind)
                country = check_country(line.hosting_country)
                clean_text(line.evidence, "evidence reference", required=True)
                clean_text(line.notes, "notes")
                clean_text(line.category or "csam", "category")
                if digest in seen:
                    raise Conflict(
                        "duplicate", f"{value!r} repeats line {seen[digest]} of this import"
                    )
            except AuthorityError as exc:
                refused.append(
                    {
                        "line": line.line,
                        "input": line.raw[:200],
                        "reason": exc.extra.get("reason", exc.code),
                        "message": str(exc),
                    }
                )
                continue
            seen[digest] = line.line
            good.append((line, kind, value, digest, country))
        with self._lock, transaction(self.conn):
            live = {
                bytes(r[0]): r[1]
                for r in self.conn.execute(
                    f"SELECT digest, id FROM entries WHERE status IN {LIVE_SQL}"
                )
            }
            fresh = []
            for item in good:
                if item[3] in live:
                    refused.append(
                        {
                            "line": item[0].line,
                            "input": item[0].raw[:200],
                            "reason": "duplicate",
                            "message": f"{item[2]!r} is already on the list or pending "
                            f"(entry {live[item[3]]})",
                        }
                    )
                else:
                    fresh.append(item)
            refused.sort(key=lambda r: r["line"])
            if not fresh:
                return ImportReport(None, 0, refused)
            cur = self.conn.execute(
                "INSERT INTO batches (created_by, created, source, size, status)"
                " VALUES (?, ?, ?, ?, 'pending')",
                (actor.id, self.now(), source[:200], len(fresh)),
            )
            batch_id = cur.lastrowid
            now = self.now()
            self.conn.executemany(
                "INSERT INTO entries (kind, value, digest, category, hosting_country, evidence,"
                " notes, status, added_by, batch_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        int(kind),
                        value,
                        digest,
                        line.category or "csam",
                        country,
                        line.evidence.strip()[:MAX_TEXT],
                        line.notes.strip()[:MAX_TEXT],
                        self.initial_status(country),
                        actor.id,
                        batch_id,
                        now,
                    )
                    for line, kind, value, digest, country in fresh
                ],
            )
            audit.append(
                self.conn,
                time=now,
                actor=actor.label,
                action="batch.import",
                detail={
                    "batch": batch_id,
                    "entries": len(fresh),
                    "refused": len(refused),
                    "source": source[:200],
                },
            )
        return ImportReport(batch_id, len(fresh), refused)

    _BATCH = (
        "SELECT b.*, c.name AS created_by_name, d.name AS decided_by_name FROM batches b"
        " JOIN officers c ON c.id = b.created_by LEFT JOIN officers d ON d.id = b.decided_by"
        " WHERE b.id = ?"
    )

    def get_batch(self, actor: Principal, batch_id: int) -> dict:
        self.require(actor, "read")
        with self._lock:
            row = self.conn.execute(self._BATCH, (batch_id,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"batch {batch_id} does not exist")
        return dict(row)

    def decide_batch(
        self,
        actor: Principal,
        batch_id: int,
        *,
        accept: bool,
        reason: str = "",
        confirm_large: bool = False,
    ) -> dict:
        self.require(actor, "approve")
        with self._lock, transaction(self.conn):
            row = self.conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise NotFound("not_found", f"batch {batch_id} does not exist")
            if row["status"] != "pending":
                raise Conflict("not_pending", f"batch {batch_id} is {row['status']}")
            if row["created_by"] == actor.id:
                raise Forbidden(
                    "four_eyes",
                    f"batch {batch_id} was imported by {actor.name}; "
                    "another approver must decide it",
                )
            now = self.now()
            if accept:
                active = self.conn.execute(
                    f"SELECT count(*) FROM entries WHERE status IN {LISTED_SQL}"
                ).fetchone()[0]
                share = row["size"] / max(active, 1)
                if share > self.bulk_share and not confirm_large:
                    raise Conflict(
                        "confirmation_required",
                        f"batch {batch_id} adds {row['size']} entries to a list of {active} "
                        f"({share:.0%}, more than the {self.bulk_share:.0%} limit); "
                        "confirm to accept it",
                        size=row["size"],
                        active=active,
                    )
                self.conn.execute(
                    "UPDATE entries SET status = 'active', approved_by = ?, approved = ?,"
                    " review_date = ? WHERE batch_id = ? AND status = 'pending'",
                    (actor.id, now, now + self.review_days * DAY, batch_id),
                )
                if share > self.bulk_share:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO meta_flags (name, value) VALUES ('bulk', 1)"
                    )
            else:
                reason = clean_text(reason, "reason", required=True)
                self.conn.execute(
                    "UPDATE entries SET status = 'rejected', approved_by = ?, approved = ?,"
                    " status_reason = ? WHERE batch_id = ? AND status = 'pending'",
                    (actor.id, now, reason, batch_id),
                )
            status = "accepted" if accept else "rejected"
            self.conn.execute(
                "UPDATE batches SET status = ?, decided_by = ?, decided = ?, reason = ?"
                " WHERE id = ?",
                (status, actor.id, now, reason, batch_id),
            )
            audit.append(
                self.conn,
                time=now,
                actor=actor.label,
                action=f"batch.{status[:-2]}",
                detail={"batch": batch_id, "entries": row["size"]},
                reason=reason,
            )
            return dict(
                self.conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            )

    # ------------------------------------------------------------------ publication

    def pending_changes(self) -> PendingChanges:
        """What the next publication adds and removes, from the listed/delisted serial marks."""
        with self._lock:
            added_rows = self.conn.execute(
                "SELECT id, kind, value, digest FROM entries"
                f" WHERE status IN {LISTED_SQL} AND listed_serial IS NULL"
            ).fetchall()
            removed_rows = self.conn.execute(
                "SELECT id, digest FROM entries WHERE listed_serial IS NOT NULL"
                f" AND delisted_serial IS NULL AND status NOT IN {LISTED_SQL}"
            ).fetchall()
            bulk = (
                self.conn.execute("SELECT value FROM meta_flags WHERE name = 'bulk'").fetchone()
                is not None
            )
        added = sorted(
            (Entry(bytes(r["digest"]), r["id"], Kind(r["kind"]), r["value"]) for r in added_rows),
            key=lambda e: e.digest,
        )
        removed = sorted((bytes(r["digest"]), r["id"]) for r in removed_rows)
        return PendingChanges(
            added=added,
            removed=[d for d, _ in removed],
            added_ids=[e.entry_id for e in added],
            removed_ids=[i for _, i in removed],
            bulk=bulk,
        )

    def mark_published(
        self,
        actor: Principal,
        changes: PendingChanges,
        *,
        serial: int,
        session: str,
        checksum: bytes,
        entry_count: int,
    ) -> None:
        with self._lock, transaction(self.conn):
            self.conn.executemany(
                "UPDATE entries SET listed_serial = ? WHERE id = ?",
                [(serial, i) for i in changes.added_ids],
            )
            self.conn.executemany(
                "UPDATE entries SET delisted_serial = ? WHERE id = ?",
                [(serial, i) for i in changes.removed_ids],
            )
            self.conn.execute("DELETE FROM meta_flags WHERE name = 'bulk'")
            self.conn.execute(
                "INSERT OR REPLACE INTO publications"
                " (serial, session, time, checksum, entry_count, added, removed, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    serial,
                    session,
                    self.now(),
                    checksum,
                    entry_count,
                    len(changes.added),
                    len(changes.removed),
                    actor.label,
                ),
            )
            audit.append(
                self.conn,
                time=self.now(),
                actor=actor.label,
                action="publish",
                detail={
                    "serial": serial,
                    "added": len(changes.added),
                    "removed": len(changes.removed),
                    "entries": entry_count,
                    "checksum": checksum.hex(),
                },
            )

    def publications(self, limit: int = 20) -> list[dict]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT * FROM publications ORDER BY serial DESC LIMIT ?", (limit,)
            )
            return [{**dict(r), "checksum": bytes(r["checksum"]).hex()} for r in rows]

    # ------------------------------------------------------------------ acks and compliance

    def record_ack(
        self, asp: Principal, instance: str, serial: int, checksum: bytes, status: dict
    ) -> None:
        if asp.kind != "asp":
            raise Forbidden("forbidden", "only an ASP token may acknowledge a serial")
        instance = instance.strip()
        if not _NAME.match(instance):
            raise Invalid("invalid_name", f"instance id {instance!r} is not valid")
        with self._lock, transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO acks (asp_id, instance, serial, checksum, time, status)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    asp.id,
                    instance,
                    serial,
                    checksum,
                    self.now(),
                    json.dumps(status, sort_keys=True)[:4000],
                ),
            )

    def compliance(self, actor: Principal, deadline: int = DAY) -> dict:
        """Per ASP instance: what it applied, how far behind it is, and whether it is overdue.

        An instance is overdue when a serial it has not applied was published more than
        `deadline` seconds ago; divergent when its acked checksum is not the one published.
        """
        self.require(actor, "read")
        now = self.now()
        with self._lock:
            pubs = {
                r["serial"]: (bytes(r["checksum"]), r["time"])
                for r in self.conn.execute("SELECT serial, checksum, time FROM publications")
            }
            asps = self.conn.execute("SELECT id, name FROM asps WHERE active = 1").fetchall()
            acks = self.conn.execute("SELECT * FROM acks").fetchall()
        newest = max(pubs, default=0)
        by_asp: dict[int, list] = {}
        for a in acks:
            by_asp.setdefault(a["asp_id"], []).append(a)
        rows = []
        for asp in asps:
            instances = by_asp.get(asp["id"]) or [None]
            for a in instances:
                serial = a["serial"] if a else 0
                unapplied = [t for s, (_, t) in pubs.items() if s > serial]
                oldest_unapplied = min(unapplied, default=None)
                expected = pubs.get(serial, (None, 0))[0]
                rows.append(
                    {
                        "asp": asp["name"],
                        "instance": a["instance"] if a else None,
                        "serial": serial if a else None,
                        "checksum": bytes(a["checksum"]).hex() if a else None,
                        "lag": newest - serial,
                        "divergent": bool(a)
                        and expected is not None
                        and bytes(a["checksum"]) != expected,
                        "last_seen": a["time"] if a else None,
                        "overdue": oldest_unapplied is not None
                        and now - oldest_unapplied > deadline,
                        "status": json.loads(a["status"]) if a else {},
                    }
                )
        return {"newest_serial": newest, "deadline": deadline, "time": now, "instances": rows}

    # ------------------------------------------------------------------ audit

    def audit_log(
        self, actor: Principal, limit: int = 100, entry_id: int | None = None
    ) -> list[dict]:
        self.require(actor, "read")
        sql = "SELECT seq, time, actor, action, entry_id, detail, reason, hash FROM audit"
        args: list = []
        if entry_id is not None:
            sql += " WHERE entry_id = ?"
            args.append(entry_id)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self.conn.execute(sql, [*args, limit]).fetchall()
        return [
            {**dict(r), "detail": json.loads(r["detail"]), "hash": bytes(r["hash"]).hex()}
            for r in rows
        ]

    def verify_audit(self) -> audit.ChainReport:
        with self._lock:
            return audit.verify_chain(self.conn)

    def bootstrap_admin(self, name: str) -> str:
        """First admin and token, for `blocklist init`; refused once any officer exists."""
        with self._lock:
            if self.conn.execute("SELECT count(*) FROM officers").fetchone()[0]:
                raise Conflict("exists", "the authority already has officers")
        _, token = self.add_officer(SYSTEM, name, "admin")
        return token

    def active_entries(self) -> Sequence[Entry]:
        with self._lock:
            rows = self.conn.execute(
                f"SELECT id, kind, value, digest FROM entries WHERE status IN {LISTED_SQL}"
            ).fetchall()
        return [Entry(bytes(r["digest"]), r["id"], Kind(r["kind"]), r["value"]) for r in rows]
