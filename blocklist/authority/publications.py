"""What the next publication changes, and the record of each publication."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blocklist.authority import audit
from blocklist.authority.db import Database
from blocklist.authority.roles import Principal
from blocklist.authority.statuses import LISTED_SQL
from blocklist.state import Entry, Kind


@dataclass
class PendingChanges:
    added: list[Entry]  # plain entries, sorted by digest
    removed: list[bytes]  # sorted digests
    added_ids: list[int]
    removed_ids: list[int]  # aligned with `removed`
    bulk: bool


class Publications:
    db: Database

    def pending_changes(self) -> PendingChanges:
        """What the next publication adds and removes, from the listed/delisted serial marks."""
        with self.db.read() as conn:
            added_rows = conn.execute(
                "SELECT id, kind, value, digest FROM entries"
                f" WHERE status IN {LISTED_SQL} AND listed_serial IS NULL"
            ).fetchall()
            removed_rows = conn.execute(
                "SELECT id, digest FROM entries WHERE listed_serial IS NOT NULL"
                f" AND delisted_serial IS NULL AND status NOT IN {LISTED_SQL}"
            ).fetchall()
            bulk = (
                conn.execute("SELECT value FROM meta_flags WHERE name = 'bulk'").fetchone()
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
        with self.db.write() as conn:
            conn.executemany(
                "UPDATE entries SET listed_serial = ? WHERE id = ?",
                [(serial, i) for i in changes.added_ids],
            )
            conn.executemany(
                "UPDATE entries SET delisted_serial = ? WHERE id = ?",
                [(serial, i) for i in changes.removed_ids],
            )
            conn.execute("DELETE FROM meta_flags WHERE name = 'bulk'")
            now = self.db.now()
            conn.execute(
                "INSERT OR REPLACE INTO publications"
                " (serial, session, time, checksum, entry_count, added, removed, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    serial,
                    session,
                    now,
                    checksum,
                    entry_count,
                    len(changes.added),
                    len(changes.removed),
                    actor.label,
                ),
            )
            audit.append(
                conn,
                time=now,
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
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM publications ORDER BY serial DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{**dict(r), "checksum": bytes(r["checksum"]).hex()} for r in rows]

    def active_url_entries(self) -> Sequence[Entry]:
        """Every URL entry the next publication lists (for its URLHOST entries)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT id, kind, value, digest FROM entries"
                # A URL held only as a digest (hashed-only feed) has no host to divert.
                f" WHERE status IN {LISTED_SQL} AND kind = ? AND value != ''",
                (int(Kind.URL),),
            ).fetchall()
        return [Entry(bytes(r["digest"]), r["id"], Kind(r["kind"]), r["value"]) for r in rows]

    def active_entries(self) -> Sequence[Entry]:
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT id, kind, value, digest FROM entries WHERE status IN {LISTED_SQL}"
            ).fetchall()
        return [Entry(bytes(r["digest"]), r["id"], Kind(r["kind"]), r["value"]) for r in rows]
