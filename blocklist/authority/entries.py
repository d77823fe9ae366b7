"""Entries and their four-eyes decisions: add, approve, reject, delist (request, confirm,
reject), read.

Every change runs in one write transaction together with its audit record, so an approval is
either fully recorded (entry state + audit) or not at all, and two approvers acting on one entry
at the same moment are serialised: the second one finds it already decided.

A manual delisting takes two people as a listing does: one officer requests it with a reason,
the entry stays listed (and published), and an approver who is neither the requester nor an
account the requester created confirms or rejects it. Delistings backed by their own evidence
or decision (complaint upheld, removal at source, lapse) call `delist_in_transaction` directly.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass

import pycountry

from blocklist.authority import audit
from blocklist.authority.db import Database
from blocklist.authority.errors import Conflict, Forbidden, Invalid, NotFound
from blocklist.authority.principals import depends_on
from blocklist.authority.roles import Principal, require
from blocklist.authority.statuses import (
    DELIST_PENDING,
    ENTRY_FILTERS,
    LISTED_SQL,
    LISTED_STATUSES,
    LIVE_SQL,
    LIVE_STATUSES,
)
from blocklist.domains import ProtectedNames
from blocklist.entries import entry_digest, guess_kind
from blocklist.errors import InvalidEntry
from blocklist.state import Kind

MAX_TEXT = 2000
MAX_VALUE = 8192
DAY = 86400


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
    delisted_by: str | None = None
    # The manual delisting asked for (pending) or done (confirmed): who asked, when, why.
    delist_pending: bool = False
    delist_requested_by: str | None = None
    delist_requested: int | None = None
    delist_request_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_country(code: str) -> str:
    code = code.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise Invalid(
            "invalid_country",
            f"hosting country {code[:20]!r} is not an ISO 3166-1 alpha-2 code",
        )
    return code


def clean_text(value: str, what: str, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise Invalid("missing_field", f"{what} is required")
    if len(value) > MAX_TEXT:
        raise Invalid("too_long", f"{what} is longer than {MAX_TEXT} characters")
    return value


_SELECT = (
    "SELECT e.*, a.name AS added_by_name, b.name AS approved_by_name, d.name AS delisted_by_name,"
    " r.status AS request_status, r.requested AS request_time, r.reason AS request_reason,"
    " q.name AS requested_by_name FROM entries e"
    " JOIN officers a ON a.id = e.added_by LEFT JOIN officers b ON b.id = e.approved_by"
    " LEFT JOIN officers d ON d.id = e.delisted_by"
    " LEFT JOIN delist_requests r ON r.entry_id = e.id AND r.status IN ('pending', 'confirmed')"
    " LEFT JOIN officers q ON q.id = r.requested_by"
)
# A request counts as pending only while its entry is listed.
_DELIST_PENDING_SQL = f"r.status = 'pending' AND e.status IN {LISTED_SQL}"


def record(row: sqlite3.Row) -> EntryRecord:
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
        delisted_by=row["delisted_by_name"],
        delist_pending=row["request_status"] == "pending" and row["status"] in LISTED_STATUSES,
        delist_requested_by=row["requested_by_name"],
        delist_requested=row["request_time"],
        delist_request_reason=row["request_reason"],
    )


def entry_row(conn: sqlite3.Connection, entry_id: int) -> sqlite3.Row:
    row = conn.execute(_SELECT + " WHERE e.id = ?", (entry_id,)).fetchone()
    if row is None:
        raise NotFound("not_found", f"entry {entry_id} does not exist")
    return row


def check_not_puppet(
    conn: sqlite3.Connection,
    actor: Principal,
    author: int,
    what: str,
    verb: str,
    role: str = "added",
) -> None:
    """Four eyes: nobody decides their own work, nor through an account they created."""
    if actor.kind != "officer":
        return
    if author == actor.id:
        raise Forbidden(
            "four_eyes", f"{what} was {role} by {actor.name}; another approver must {verb} it"
        )
    if depends_on(conn, actor.id, author):
        raise Forbidden(
            "four_eyes",
            f"{actor.name}'s account and that of the officer who {role} {what} were created one "
            f"by the other; an approver independent of them must {verb} it",
        )


class Entries:
    db: Database
    protected: ProtectedNames
    review_days: int
    home_country: str | None

    def initial_status(self, country: str) -> str:
        """Content hosted at home is taken down, not blocked: it starts as a tracked takedown."""
        return "takedown" if country == self.home_country else "pending"

    def get(self, actor: Principal, entry_id: int) -> EntryRecord:
        require(actor, "read")
        with self.db.read() as conn:
            return record(entry_row(conn, entry_id))

    def list_entries(
        self,
        actor: Principal,
        *,
        status: str | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EntryRecord]:
        require(actor, "read")
        where, args = [], []
        if status == DELIST_PENDING:
            where.append(_DELIST_PENDING_SQL)
        elif status:
            if status not in ENTRY_FILTERS:
                raise Invalid(
                    "invalid_status",
                    f"unknown status {status[:40]!r} (one of {', '.join(ENTRY_FILTERS)})",
                )
            where.append("e.status = ?")
            args.append(status)
        if search:
            where.append("(e.value LIKE ? OR e.evidence LIKE ?)")
            args += [f"%{search}%"] * 2
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY e.id LIMIT ? OFFSET ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, [*args, max(1, min(limit, 10000)), max(0, offset)])
            return [record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT status, count(*) FROM entries GROUP BY status")
            return {r[0]: r[1] for r in rows}

    def delist_pending_count(self) -> int:
        """Delistings requested and awaiting a second officer."""
        with self.db.read() as conn:
            sql = "SELECT count(*) FROM entries e JOIN delist_requests r ON r.entry_id = e.id"
            return conn.execute(f"{sql} WHERE {_DELIST_PENDING_SQL}").fetchone()[0]

    def canonical(self, raw: str, kind: Kind | None) -> tuple[Kind, str, bytes]:
        if len(raw) > MAX_VALUE:
            raise Invalid("too_long", f"value is longer than {MAX_VALUE} characters")
        kind = kind or guess_kind(raw)
        try:
            value, digest = entry_digest(kind, raw, self.protected)
        except InvalidEntry as exc:
            raise Invalid("invalid_entry", str(exc), reason=exc.reason) from None
        return kind, value, digest

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
        require(actor, "add")
        kind, value, digest = self.canonical(raw, kind)
        country = check_country(hosting_country)
        evidence = clean_text(evidence, "evidence reference", required=True)
        notes = clean_text(notes, "notes")
        category = clean_text(category, "category", required=True)
        with self.db.write() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO entries (kind, value, digest, category, hosting_country,"
                    " evidence, notes, status, added_by, batch_id, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
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
                        self.db.now(),
                    ),
                )
            except sqlite3.IntegrityError:
                other = conn.execute(
                    f"SELECT id, status FROM entries WHERE digest = ? AND status IN {LIVE_SQL}",
                    (digest,),
                ).fetchone()
                raise Conflict(
                    "duplicate",
                    f"{value!r} is already on the list or pending (entry {other[0]}, {other[1]})",
                    entry_id=other[0],
                ) from None
            entry_id = cur.lastrowid or 0
            audit.append(
                conn,
                time=self.db.now(),
                actor=actor.label,
                action="entry.add",
                entry_id=entry_id,
                detail={"kind": kind.name.lower(), "value": value},
            )
            return record(entry_row(conn, entry_id))

    def _decide_check(
        self, conn: sqlite3.Connection, actor: Principal, row: sqlite3.Row, verb: str
    ) -> None:
        if row["status"] != "pending":
            raise Conflict("not_pending", f"entry {row['id']} is {row['status']}, not pending")
        check_not_puppet(conn, actor, row["added_by"], f"entry {row['id']}", verb)
        escalated = conn.execute(
            "SELECT escalated_by FROM takedowns WHERE entry_id = ? AND escalated IS NOT NULL",
            (row["id"],),
        ).fetchone()
        if escalated is not None:
            check_not_puppet(conn, actor, escalated[0], f"entry {row['id']}", verb, "escalated")
        if row["batch_id"] is not None:
            raise Conflict(
                "in_batch",
                f"entry {row['id']} belongs to batch {row['batch_id']}; decide the batch",
            )

    def approve(self, actor: Principal, entry_id: int) -> EntryRecord:
        require(actor, "approve")
        with self.db.write() as conn:
            self._decide_check(conn, actor, entry_row(conn, entry_id), "approve")
            now = self.db.now()
            conn.execute(
                "UPDATE entries SET status = 'active', approved_by = ?, approved = ?,"
                " review_date = ? WHERE id = ? AND status = 'pending'",
                (actor.id, now, now + self.review_days * DAY, entry_id),
            )
            audit.append(
                conn, time=now, actor=actor.label, action="entry.approve", entry_id=entry_id
            )
            return record(entry_row(conn, entry_id))

    def reject(self, actor: Principal, entry_id: int, reason: str) -> EntryRecord:
        require(actor, "approve")
        reason = clean_text(reason, "reason", required=True)
        with self.db.write() as conn:
            self._decide_check(conn, actor, entry_row(conn, entry_id), "reject")
            conn.execute(
                "UPDATE entries SET status = 'rejected', approved_by = ?, approved = ?,"
                " status_reason = ? WHERE id = ?",
                (actor.id, self.db.now(), reason, entry_id),
            )
            audit.append(
                conn,
                time=self.db.now(),
                actor=actor.label,
                action="entry.reject",
                entry_id=entry_id,
                reason=reason,
            )
            return record(entry_row(conn, entry_id))

    def delist(self, actor: Principal, entry_id: int, reason: str) -> EntryRecord:
        """Request a manual delisting, with a reason. The entry stays listed (and in every
        publication) until another approver confirms it (`confirm_delist`)."""
        require(actor, "delist")
        if actor.kind != "officer":
            raise Forbidden("forbidden", "a manual delisting is requested by an officer")
        reason = clean_text(reason, "reason", required=True)
        with self.db.write() as conn:
            row = entry_row(conn, entry_id)
            if row["status"] not in LISTED_STATUSES:
                hint = "; an approver rejects a pending entry" if row["status"] == "pending" else ""
                raise Conflict(
                    "not_listed",
                    f"entry {entry_id} is {row['status']}, not on the list: "
                    f"nothing to delist{hint}",
                )
            if row["request_status"] == "pending":
                raise Conflict(
                    "delist_pending",
                    f"the delisting of entry {entry_id} was already requested by "
                    f"{row['requested_by_name']}; an approver must confirm or reject it",
                )
            now = self.db.now()
            cur = conn.execute(
                "INSERT INTO delist_requests (entry_id, requested_by, requested, reason, status)"
                " VALUES (?, ?, ?, ?, 'pending')",
                (entry_id, actor.id, now, reason),
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="entry.delist_request",
                entry_id=entry_id,
                reason=reason,
                detail={"request": cur.lastrowid},
            )
            return record(entry_row(conn, entry_id))

    def _delist_request(
        self, conn: sqlite3.Connection, actor: Principal, entry_id: int, verb: str
    ) -> sqlite3.Row:
        """The pending request on a listed entry, if `actor` may decide it (four eyes)."""
        row = entry_row(conn, entry_id)
        request = conn.execute(
            "SELECT r.*, q.name AS requested_by_name FROM delist_requests r"
            " JOIN officers q ON q.id = r.requested_by"
            " WHERE r.entry_id = ? AND r.status = 'pending'",
            (entry_id,),
        ).fetchone()
        if request is None or row["status"] not in LISTED_STATUSES:
            raise Conflict(
                "no_delist_request",
                f"entry {entry_id} is {row['status']} and has no delisting awaiting confirmation",
            )
        what = f"the delisting of entry {entry_id}"
        check_not_puppet(conn, actor, request["requested_by"], what, verb, "requested")
        return request

    def _decide_request(
        self,
        conn: sqlite3.Connection,
        actor: Principal,
        request: sqlite3.Row,
        status: str,
        why: str,
    ) -> dict:
        """Close a request as confirmed or rejected; the audit detail that names it."""
        conn.execute(
            "UPDATE delist_requests SET status = ?, decided_by = ?, decided = ?,"
            " decision_reason = ? WHERE id = ?",
            (status, actor.id, self.db.now(), why, request["id"]),
        )
        return {"request": request["id"], "requested_by": f"officer:{request['requested_by_name']}"}

    def confirm_delist(self, actor: Principal, entry_id: int, note: str = "") -> EntryRecord:
        """The second officer: the requested delisting takes effect (next publication)."""
        require(actor, "approve")
        note = clean_text(note, "note")
        with self.db.write() as conn:
            request = self._delist_request(conn, actor, entry_id, "confirm")
            detail = self._decide_request(conn, actor, request, "confirmed", note)
            self.delist_in_transaction(
                actor, entry_id, request["reason"], detail={**detail, "note": note}
            )
            return record(entry_row(conn, entry_id))

    def reject_delist(self, actor: Principal, entry_id: int, reason: str) -> EntryRecord:
        """The second officer refuses the delisting, with a reason: the entry stays listed."""
        require(actor, "approve")
        reason = clean_text(reason, "reason", required=True)
        with self.db.write() as conn:
            request = self._delist_request(conn, actor, entry_id, "reject")
            audit.append(
                conn,
                time=self.db.now(),
                actor=actor.label,
                action="entry.delist_reject",
                entry_id=entry_id,
                reason=reason,
                detail=self._decide_request(conn, actor, request, "rejected", reason),
            )
            return record(entry_row(conn, entry_id))

    def delist_in_transaction(
        self,
        actor: Principal,
        entry_id: int,
        reason: str,
        cause: str = "officer",
        detail: dict | None = None,
    ) -> None:
        """The delisting itself; joins the caller's write transaction when there is one.

        A delisting request still pending is closed as superseded: the entry is off the list.
        """
        with self.db.write() as conn:
            row = entry_row(conn, entry_id)
            if row["status"] not in LIVE_STATUSES:
                raise Conflict(
                    "not_listed", f"entry {entry_id} is {row['status']}; nothing to delist"
                )
            now = self.db.now()
            conn.execute(
                "UPDATE entries SET status = 'delisted', delisted = ?, delisted_by = ?,"
                " status_reason = ?, delist_cause = ? WHERE id = ?",
                (
                    now,
                    actor.id if actor.kind == "officer" else None,
                    reason,
                    cause,
                    entry_id,
                ),
            )
            superseded = conn.execute(
                "UPDATE delist_requests SET status = 'superseded', decided = ?"
                " WHERE entry_id = ? AND status = 'pending' RETURNING id",
                (now, entry_id),
            ).fetchone()
            extra = {"superseded_request": superseded[0]} if superseded else {}
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="entry.delist",
                entry_id=entry_id,
                reason=reason,
                detail={"cause": cause, **(detail or {}), **extra},
            )
