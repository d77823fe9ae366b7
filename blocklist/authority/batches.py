"""Batch imports: many entries queued as one batch that another approver accepts or rejects.

The canonical forms are computed before the write transaction opens, so a large import holds
the write lock only for its inserts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from blocklist.authority import audit
from blocklist.authority.bulk import drain
from blocklist.authority.db import Database
from blocklist.authority.entries import (
    DAY,
    MAX_TEXT,
    check_country,
    check_not_puppet,
    clean_text,
)
from blocklist.authority.errors import AuthorityError, Conflict, Invalid, NotFound
from blocklist.authority.roles import Principal, require
from blocklist.authority.statuses import LISTED_SQL, LIVE_SQL
from blocklist.entries import parse_kind
from blocklist.errors import InvalidEntry
from blocklist.state import Kind


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
    takedown: int = 0  # accepted lines hosted at home: tracked as takedowns, not blocked

    def to_dict(self) -> dict:
        return asdict(self)


def _refusal(line: ImportLine, exc: AuthorityError) -> dict:
    return {
        "line": line.line,
        "input": line.raw[:200],
        "reason": exc.extra.get("reason", exc.code),
        "message": str(exc),
    }


_BATCH = (
    "SELECT b.*, c.name AS created_by_name, d.name AS decided_by_name FROM batches b"
    " JOIN officers c ON c.id = b.created_by LEFT JOIN officers d ON d.id = b.decided_by"
    " WHERE b.id = ?"
)


class Batches:
    db: Database
    bulk_share: float
    review_days: int

    # Provided by Entries.
    canonical: Callable[..., tuple[Kind, str, bytes]]
    initial_status: Callable[[str], str]

    def import_batch(
        self,
        actor: Principal,
        lines: Iterable[ImportLine],
        source: str = "",
        progress: Callable[[int], None] | None = None,
        refused_by_client: int = 0,
        dry_run: bool = False,
    ) -> ImportReport:
        """Queue many entries as one batch; lines that cannot be listed are reported with their
        reason (and line number), the rest form the batch.

        `refused_by_client` counts lines the client refused before sending, so the audit record
        states the same number of refusals as the client shows. `dry_run` checks every line the
        same way and writes nothing (the console's preview).
        """
        require(actor, "add")
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
                kind, value, digest = self.canonical(line.raw, kind)
                country = check_country(line.hosting_country)
                clean_text(line.evidence, "evidence reference", required=True)
                clean_text(line.notes, "notes")
                clean_text(line.category or "csam", "category")
                if digest in seen:
                    raise Conflict(
                        "duplicate", f"{value!r} repeats line {seen[digest]} of this import"
                    )
            except AuthorityError as exc:
                refused.append(_refusal(line, exc))
                continue
            seen[digest] = line.line
            good.append((line, kind, value, digest, country))
        with self.db.write() as conn:
            live = {
                bytes(r[0]): r[1]
                for r in conn.execute(f"SELECT digest, id FROM entries WHERE status IN {LIVE_SQL}")
            }
            fresh = []
            for item in good:
                if item[3] in live:
                    refused.append(
                        _refusal(
                            item[0],
                            Conflict(
                                "duplicate",
                                f"{item[2]!r} is already on the list or pending "
                                f"(entry {live[item[3]]})",
                            ),
                        )
                    )
                else:
                    fresh.append(item)
            refused.sort(key=lambda r: r["line"])
            if dry_run:  # a preview: what would be accepted and refused, nothing written
                home = sum(1 for item in fresh if self.initial_status(item[4]) == "takedown")
                return ImportReport(None, len(fresh), refused, home)
            if not fresh:
                return ImportReport(None, 0, refused)
            now = self.db.now()
            cur = conn.execute(
                "INSERT INTO batches (created_by, created, source, size, status)"
                " VALUES (?, ?, ?, ?, 'pending')",
                (actor.id, now, source[:200], len(fresh)),
            )
            batch_id = cur.lastrowid
            rows = [
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
            ]
            conn.executemany(
                "INSERT INTO entries (kind, value, digest, category, hosting_country, evidence,"
                " notes, status, added_by, batch_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            takedown = sum(1 for r in rows if r[7] == "takedown")
            accepted = len(fresh)
            drain(rows)
            drain(fresh)
            drain(good)
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="batch.import",
                detail={
                    "batch": batch_id,
                    "entries": accepted,
                    "refused": len(refused) + refused_by_client,
                    "source": source[:200],
                },
            )
        return ImportReport(batch_id, accepted, refused, takedown)

    def get_batch(self, actor: Principal, batch_id: int) -> dict:
        require(actor, "read")
        with self.db.read() as conn:
            row = conn.execute(_BATCH, (batch_id,)).fetchone()
            if row is None:
                raise NotFound("not_found", f"batch {batch_id} does not exist")
            return {**dict(row), **self._batch_counts(conn, batch_id)}

    def pending_batches(self, actor: Principal, limit: int = 100) -> list[dict]:
        """Batches awaiting a decision, oldest first."""
        require(actor, "read")
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT b.id, b.created, b.source, b.size, c.name AS created_by_name"
                " FROM batches b JOIN officers c ON c.id = b.created_by"
                " WHERE b.status = 'pending' ORDER BY b.id LIMIT ?",
                (max(1, min(limit, 10000)),),
            ).fetchall()
        return [dict(r) for r in rows]

    @staticmethod
    def _batch_counts(conn, batch_id: int) -> dict[str, int]:
        counts = dict(
            conn.execute(
                "SELECT status, count(*) FROM entries WHERE batch_id = ? GROUP BY status",
                (batch_id,),
            ).fetchall()
        )
        return {"entries_by_status": counts}

    def decide_batch(
        self,
        actor: Principal,
        batch_id: int,
        *,
        accept: bool,
        reason: str = "",
        confirm_large: bool = False,
    ) -> dict:
        require(actor, "approve")
        with self.db.write() as conn:
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise NotFound("not_found", f"batch {batch_id} does not exist")
            if row["status"] != "pending":
                raise Conflict("not_pending", f"batch {batch_id} is {row['status']}")
            check_not_puppet(
                conn, actor, row["created_by"], f"batch {batch_id}", "decide", "imported"
            )
            now = self.db.now()
            if accept:
                active = conn.execute(
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
                conn.execute(
                    "UPDATE entries SET status = 'active', approved_by = ?, approved = ?,"
                    " review_date = ? WHERE batch_id = ? AND status = 'pending'",
                    (actor.id, now, now + self.review_days * DAY, batch_id),
                )
                if share > self.bulk_share:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta_flags (name, value) VALUES ('bulk', 1)"
                    )
            else:
                reason = clean_text(reason, "reason", required=True)
                conn.execute(
                    "UPDATE entries SET status = 'rejected', approved_by = ?, approved = ?,"
                    " status_reason = ? WHERE batch_id = ? AND status IN ('pending', 'takedown')",
                    (actor.id, now, reason, batch_id),
                )
            status = "accepted" if accept else "rejected"
            conn.execute(
                "UPDATE batches SET status = ?, decided_by = ?, decided = ?, reason = ?"
                " WHERE id = ?",
                (status, actor.id, now, reason, batch_id),
            )
            counts = self._batch_counts(conn, batch_id)
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action=f"batch.{status[:-2]}",
                detail={"batch": batch_id, "entries": row["size"], **counts},
                reason=reason,
            )
            decided = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            return {**dict(decided), **counts}
