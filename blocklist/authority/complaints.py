"""Complaints about blocked addresses: intake from ASPs' stop pages, and officers' decisions.

Intake is idempotent per (ASP, idempotency key), so a stop page that retries after a lost
answer never files a complaint twice. A decision needs written reasons and an officer who
neither added nor approved the entry; an upheld complaint delists the entry in the same
transaction, and the next publication lifts the block.
"""

from __future__ import annotations

import secrets
import sqlite3

from blocklist.authority import audit
from blocklist.authority.entries import clean_text
from blocklist.authority.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)
from blocklist.authority.principals import depends_on
from blocklist.authority.roles import Principal
from blocklist.authority.store import Store

ROLES = ("site_owner", "hosting_provider", "visitor", "other")
DECISIONS = ("upheld", "rejected")
MAX_REASON = 2000  # the same bound as every free-text field at the authority
MAX_CONTACT = 200


def _public(row: sqlite3.Row) -> dict:
    """What the complainant may see: status and the written reasons, nothing about officers."""
    return {
        "complaint_id": row["public_id"],
        "status": row["status"],
        "decided": row["decided"],
        "decision_reasons": row["decision_reasons"],
    }


def _full(row: sqlite3.Row) -> dict:
    return {
        "complaint_id": row["public_id"],
        "ticket": row["ticket"],
        "asp": row["asp_name"],
        "entry_id": row["entry_id"],
        "host": row["host"],
        "role": row["role"],
        "reason": row["reason"],
        "contact": row["contact"],
        "language": row["language"],
        "received": row["received"],
        "created": row["created"],
        "status": row["status"],
        "decided_by": row["decided_by_name"],
        "decided": row["decided"],
        "decision_reasons": row["decision_reasons"],
    }


_SELECT = (
    "SELECT c.*, a.name AS asp_name, o.name AS decided_by_name FROM complaints c"
    " JOIN asps a ON a.id = c.asp_id LEFT JOIN officers o ON o.id = c.decided_by"
)


class Complaints:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _row(self, conn: sqlite3.Connection, public_id: str) -> sqlite3.Row:
        row = conn.execute(_SELECT + " WHERE c.public_id = ?", (public_id,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"complaint {public_id[:80]!r} does not exist")
        return row

    def _find(self, conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
        """By complaint id (C-…), or by the ticket (T-…) the stop page gave the visitor."""
        if not ref.startswith("T-"):
            return self._row(conn, ref)
        rows = conn.execute(_SELECT + " WHERE c.ticket = ?", (ref,)).fetchall()
        if not rows:
            raise NotFound("not_found", f"no complaint has the ticket {ref[:80]!r}")
        if len(rows) > 1:  # tickets are unique per stop page, not across ASPs
            ids = ", ".join(r["public_id"] for r in rows)
            raise Conflict("ambiguous", f"ticket {ref} names several complaints: {ids}")
        return rows[0]

    def submit(
        self,
        asp: Principal,
        *,
        idempotency_key: str,
        entry_id: int | None,
        host: str,
        role: str,
        reason: str,
        contact: str = "",
        language: str = "",
        received: int,
        ticket: str | None = None,
    ) -> tuple[dict, bool]:
        """File a complaint; the same key from the same ASP gives back the first (created=False)."""
        if asp.kind != "asp":
            raise Forbidden("forbidden", "complaints are filed by ASPs' stop pages")
        if role not in ROLES:
            choices = ", ".join(ROLES)
            raise Invalid("invalid_role", f"role must be one of {choices}")
        reason = clean_text(reason, "reason", required=True)
        contact = contact.strip()
        if len(contact) > MAX_CONTACT:
            raise Invalid("too_long", f"contact is longer than {MAX_CONTACT} characters")
        store = self.store
        with store.db.write() as conn:
            row = conn.execute(
                _SELECT + " WHERE c.asp_id = ? AND c.idempotency_key = ?",
                (asp.id, idempotency_key),
            ).fetchone()
            if row is not None:
                return _public(row), False
            known = (
                entry_id is not None
                and conn.execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,)).fetchone()
            )
            public_id = "C-" + secrets.token_hex(6).upper()
            conn.execute(
                "INSERT INTO complaints (public_id, asp_id, idempotency_key, entry_id, host, role,"
                " reason, contact, language, received, created, status, ticket)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'received', ?)",
                (
                    public_id,
                    asp.id,
                    idempotency_key,
                    entry_id if known else None,
                    host[:253],
                    role,
                    reason,
                    contact,
                    language[:16],
                    received,
                    store.now(),
                    ticket,
                ),
            )
            audit.append(
                conn,
                time=store.now(),
                actor=asp.label,
                action="complaint.receive",
                entry_id=entry_id if known else None,
                detail={"complaint": public_id, "role": role},
            )
            return _public(self._row(conn, public_id)), True

    def status_for_asp(self, asp: Principal, public_id: str) -> dict:
        with self.store.db.read() as conn:
            row = self._row(conn, public_id)
        if row["asp_id"] != asp.id:
            raise NotFound("not_found", f"complaint {public_id!r} does not exist")
        return _public(row)

    def decided_since(self, asp: Principal, since: int) -> list[dict]:
        """Decisions on this ASP's complaints made at or after `since` (the forwarder polls)."""
        with self.store.db.read() as conn:
            rows = conn.execute(
                _SELECT + " WHERE c.asp_id = ? AND c.decided >= ? ORDER BY c.decided",
                (asp.id, since),
            ).fetchall()
        return [_public(r) for r in rows]

    def list(self, actor: Principal, status: str | None = None, limit: int = 100) -> list[dict]:
        self.store.require(actor, "read")
        sql, args = _SELECT, []
        if status:
            sql += " WHERE c.status = ?"
            args.append(status)
        sql += " ORDER BY c.id DESC LIMIT ?"
        with self.store.db.read() as conn:
            rows = conn.execute(sql, [*args, max(1, min(limit, 10000))]).fetchall()
        return [_full(r) for r in rows]

    def get(self, actor: Principal, ref: str) -> dict:
        self.store.require(actor, "read")
        with self.store.db.read() as conn:
            return _full(self._find(conn, ref))

    def decide(self, actor: Principal, public_id: str, decision: str, reasons: str) -> dict:
        self.store.require(actor, "decide")
        if decision not in DECISIONS:
            raise Invalid("invalid_decision", "decision must be upheld or rejected")
        reasons = clean_text(reasons, "reasons", required=True)
        store = self.store
        with store.db.write() as conn:
            row = self._find(conn, public_id)
            public_id = row["public_id"]
            if row["status"] != "received":
                raise Conflict("decided", f"complaint {public_id} is already {row['status']}")
            entry_id = row["entry_id"]
            if entry_id is not None:
                entry = conn.execute(
                    "SELECT added_by, approved_by, status FROM entries WHERE id = ?", (entry_id,)
                ).fetchone()
                involved = [entry["added_by"], entry["approved_by"]]
                if any(o is not None and depends_on(conn, actor.id, o) for o in involved):
                    raise Forbidden(
                        "conflict_of_interest",
                        f"you added or approved entry {entry_id} (or your account and theirs were "
                        f"created one by the other); another officer must decide complaint "
                        f"{public_id}",
                    )
                if decision == "upheld" and entry["status"] in ("active", "pending"):
                    store.delist_in_transaction(
                        actor,
                        entry_id,
                        f"complaint {public_id} upheld: {reasons}",
                        cause="complaint_upheld",
                    )
            now = store.now()
            conn.execute(
                "UPDATE complaints SET status = ?, decided_by = ?, decided = ?,"
                " decision_reasons = ? WHERE id = ?",
                (decision, actor.id, now, reasons, row["id"]),
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action=f"complaint.{decision}",
                entry_id=entry_id,
                detail={"complaint": public_id},
                reason=reasons,
            )
            return _full(self._row(conn, public_id))
