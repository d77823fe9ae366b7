"""The authority's store: one SQLite database and the concepts kept in it.

`Store` puts together the `Database` (connections, write lock, transactions) and one module per
concept — principals (officers, ASPs, tokens), entries, batches, publications, compliance
(acks), feeds — plus the audit log. No module reaches into another's connection; each uses
`db.write()` or `db.read()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from blocklist.authority import audit
from blocklist.authority.batches import Batches, ImportLine, ImportReport
from blocklist.authority.compliance import Compliance, open_acks
from blocklist.authority.db import Database
from blocklist.authority.entries import (
    Entries,
    EntryRecord,
    check_country,
    clean_text,
)
from blocklist.authority.errors import AuthorityError
from blocklist.authority.feeds import Feeds
from blocklist.authority.principals import Principals, hash_token
from blocklist.authority.publications import PendingChanges, Publications
from blocklist.authority.roles import ROLES, SYSTEM, Principal, require
from blocklist.authority.statuses import (
    ENTRY_STATUSES,
    LISTED_SQL,
    LISTED_STATUSES,
    LIVE_SQL,
    LIVE_STATUSES,
)
from blocklist.domains import ProtectedNames

__all__ = [
    "ENTRY_STATUSES",
    "LISTED_SQL",
    "LISTED_STATUSES",
    "LIVE_SQL",
    "LIVE_STATUSES",
    "ROLES",
    "SYSTEM",
    "AuthorityError",
    "EntryRecord",
    "ImportLine",
    "ImportReport",
    "PendingChanges",
    "Principal",
    "Store",
    "check_country",
    "clean_text",
    "hash_token",
]
MAX_AUDIT_LIMIT = 10000


class Store(Principals, Entries, Batches, Publications, Compliance, Feeds):
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
        self.db = Database(self.path, clock)
        try:
            self.acks = open_acks(self.db)
        except BaseException:
            self.db.close()
            raise
        self.protected = protected or ProtectedNames()
        self.clock = clock
        self.review_days = review_days
        self.bulk_share = bulk_share
        self.home_country = home_country

    require = staticmethod(require)

    def now(self) -> int:
        return self.db.now()

    def close(self) -> None:
        self.db.close()
        self.acks.close()

    # ------------------------------------------------------------------ audit

    def audit_log(
        self, actor: Principal, limit: int = 100, entry_id: int | None = None
    ) -> list[dict]:
        require(actor, "read")
        sql = "SELECT seq, time, actor, action, entry_id, detail, reason, hash FROM audit"
        args: list = []
        if entry_id is not None:
            sql += " WHERE entry_id = ?"
            args.append(entry_id)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, [*args, max(1, min(limit, MAX_AUDIT_LIMIT))]).fetchall()
        return [
            {**dict(r), "detail": audit.load_detail(r["detail"]), "hash": bytes(r["hash"]).hex()}
            for r in rows
        ]

    def audit_head(self) -> audit.Head:
        with self.db.read() as conn:
            return audit.head(conn)

    def verify_audit(self, expected: Iterable[audit.Head] = ()) -> audit.ChainReport:
        with self.db.read() as conn:
            return audit.verify_chain(conn, expected)
