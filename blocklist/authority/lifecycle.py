"""Block until removal: takedowns at home, liveness history, removal at source, review dates.

States of an entry (see docs/authority.md for the diagram):

  hosted abroad:  pending → active → (K × gone) → removal_pending* → delisted (removed at source)
                                   → (review date + grace passed) → delisted (lapsed)
  hosted at home: takedown → (deadline passed, still online, officer escalates) → pending → …
                           → (K × gone)* → delisted (removed at source, never listed)

  * an officer confirms, except with the "auto" policy when all K were strong evidence (the
    name gone from every one of two or more resolvers): then the entry is delisted at once.
    HTTP 404/410/451 and refused connections are the site's own word, which a cloaking site
    gives the checker alone, so they never delist without an officer.

Every transition writes an audit record with its reason, in the transaction that makes it.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

from blocklist.authority import audit
from blocklist.authority.entries import clean_text
from blocklist.authority.errors import (
    Conflict,
    Invalid,
    NotFound,
)
from blocklist.authority.liveness import STRONG
from blocklist.authority.roles import SYSTEM, Principal
from blocklist.authority.statuses import LISTED_SQL, LISTED_STATUSES, LIVE_SQL
from blocklist.authority.store import Store

HOUR = 3600
DAY = 86400
OUTCOMES = ("online", "gone", "unknown")
CHECKED_STATUSES = ("active", "removal_pending", "takedown")


@dataclass(frozen=True)
class LifecyclePolicy:
    takedown_hours: float = 24
    check_interval_hours: float = 24  # how often each entry is checked
    gone_threshold: int = 3  # K consecutive "gone" checks…
    gone_min_interval_hours: float = 12  # …each at least this far apart
    # "auto": strong evidence delists at once, weak evidence waits for an officer;
    # "confirm": an officer confirms every removal.
    removal_policy: str = "auto"
    review_grace_days: float = 14  # after the review date, before an entry lapses
    # How far a takedown notice's "sent" time may differ from now (clock skew, a notice sent
    # a moment before it is recorded). Backdating further would shorten the deadline.
    sent_tolerance_minutes: float = 60


@dataclass(frozen=True)
class Check:
    """One liveness observation (from the checker, or recorded by hand)."""

    outcome: str
    detail: str
    http_status: int | None = None
    redirect: str | None = None
    address: str | None = None
    evidence: str = ""  # for "gone": how strong (liveness.STRONG, ...)

    @property
    def strong(self) -> bool:
        return self.outcome == "gone" and self.evidence == STRONG


class Lifecycle:
    def __init__(self, store: Store, policy: LifecyclePolicy) -> None:
        self.store = store
        self.policy = policy

    def _entry(self, conn, entry_id: int):
        row = conn.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"entry {entry_id} does not exist")
        return row

    def _audit(
        self,
        conn,
        actor: Principal,
        action: str,
        entry_id: int | None,
        reason: str = "",
        **detail: object,
    ) -> None:
        audit.append(
            conn,
            time=self.store.now(),
            actor=actor.label,
            action=action,
            entry_id=entry_id,
            detail=detail,
            reason=reason,
        )

    # ------------------------------------------------------------------ takedowns at home

    def record_takedown(
        self, actor: Principal, entry_id: int, recipient: str, sent: int | None = None
    ) -> dict:
        self.store.require(actor, "add")
        recipient = clean_text(recipient, "recipient", required=True)
        with self.store.db.write() as conn:
            row = self._entry(conn, entry_id)
            if row["status"] != "takedown":
                raise Conflict(
                    "not_takedown",
                    f"entry {entry_id} is {row['status']}: hosted abroad, "
                    "it is blocked, not taken down",
                )
            now = self.store.now()
            sent = sent if sent is not None else now
            tolerance = int(self.policy.sent_tolerance_minutes * 60)
            if abs(sent - now) > tolerance:
                raise Invalid(
                    "invalid_sent",
                    f"the notice's sent time {_utc(sent)} is more than "
                    f"{tolerance // 60} minutes from now ({_utc(now)}); record a notice when "
                    "it is sent, so its deadline cannot be shortened by backdating",
                )
            deadline = int(sent + self.policy.takedown_hours * HOUR)
            conn.execute(
                "INSERT OR REPLACE INTO takedowns"
                " (entry_id, recipient, sent, deadline, recorded_by) VALUES (?, ?, ?, ?, ?)",
                (entry_id, recipient, sent, deadline, actor.id),
            )
            self._audit(
                conn, actor, "takedown.notice", entry_id, recipient=recipient, deadline=deadline
            )
        return self.takedown(entry_id)

    def takedown(self, entry_id: int) -> dict:
        with self.store.db.read() as conn:
            row = conn.execute("SELECT * FROM takedowns WHERE entry_id = ?", (entry_id,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"entry {entry_id} has no takedown notice")
        return dict(row)

    def escalate(self, actor: Principal, entry_id: int, reason: str) -> None:
        """Content at home still online after the deadline: it may go to the block list, through
        the same four-eyes approval as any entry."""
        self.store.require(actor, "add")
        reason = clean_text(reason, "reason", required=True)
        with self.store.db.write() as conn:
            row = self._entry(conn, entry_id)
            if row["status"] != "takedown":
                raise Conflict("not_takedown", f"entry {entry_id} is {row['status']}")
            notice = conn.execute(
                "SELECT deadline FROM takedowns WHERE entry_id = ?", (entry_id,)
            ).fetchone()
            now = self.store.now()
            if notice is None:
                raise Conflict("no_notice", f"record the takedown notice of entry {entry_id} first")
            if now < notice["deadline"]:
                raise Conflict(
                    "deadline_not_reached",
                    f"the takedown deadline of entry {entry_id} is {_utc(notice['deadline'])}",
                )
            if row["last_outcome"] != "online":
                raise Conflict(
                    "not_online",
                    f"entry {entry_id} was last seen {row['last_outcome'] or 'never checked'}; "
                    "escalate only what is still online",
                )
            conn.execute("UPDATE entries SET status = 'pending' WHERE id = ?", (entry_id,))
            conn.execute(
                "UPDATE takedowns SET escalated = ?, escalated_by = ? WHERE entry_id = ?",
                (now, actor.id, entry_id),
            )
            self._audit(conn, actor, "takedown.escalate", entry_id, reason)

    def record_partner_notice(
        self, actor: Principal, entry_id: int, partner: str, reference: str = ""
    ) -> None:
        """Note that the hosting country's hotline (or another partner) was told."""
        self.store.require(actor, "add")
        partner = clean_text(partner, "partner", required=True)
        with self.store.db.write() as conn:
            self._entry(conn, entry_id)
            conn.execute(
                "INSERT INTO partner_notices (entry_id, partner, reference, sent, recorded_by)"
                " VALUES (?, ?, ?, ?, ?)",
                (entry_id, partner, reference[:200], self.store.now(), actor.id),
            )
            self._audit(
                conn, actor, "partner.notice", entry_id, partner=partner, reference=reference
            )

    # ------------------------------------------------------------------ liveness

    def due_for_check(self, limit: int = 10000) -> list[tuple[int, int, str]]:
        """(entry id, kind, value) of entries whose last check is older than the cadence."""
        before = self.store.now() - int(self.policy.check_interval_hours * HOUR)
        statuses = ", ".join(f"'{s}'" for s in CHECKED_STATUSES)
        with self.store.db.read() as conn:
            rows = conn.execute(
                f"SELECT id, kind, value FROM entries WHERE status IN ({statuses})"
                " AND (last_check IS NULL OR last_check <= ?) ORDER BY last_check IS NOT NULL,"
                " last_check LIMIT ?",
                (before, limit),
            ).fetchall()
        return [(r["id"], r["kind"], r["value"]) for r in rows]

    def record_check(self, entry_id: int, check: Check, actor: Principal = SYSTEM) -> str | None:
        """Record one observation and move the entry if it completes a removal.

        Returns the transition made, if any. "gone" counts only when at least the minimum
        interval after the last counted one; "online" resets the count (a flapping site is not
        removed); "unknown" changes nothing.
        """
        if check.outcome not in OUTCOMES:
            raise Invalid("invalid_outcome", f"unknown outcome {check.outcome!r}")
        now = self.store.now()
        gap = int(self.policy.gone_min_interval_hours * HOUR)
        with self.store.db.write() as conn:
            row = self._entry(conn, entry_id)
            conn.execute(
                "INSERT INTO checks (entry_id, time, outcome, detail, http_status, redirect,"
                " address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry_id,
                    now,
                    check.outcome,
                    check.detail[:200],
                    check.http_status,
                    (check.redirect or None) and check.redirect[:500],
                    check.address,
                ),
            )
            count, last_gone = row["gone_count"], row["last_gone"]
            strong = row["strong_gone_count"]
            if check.outcome == "online":
                count, strong, last_gone = 0, 0, None
            elif check.outcome == "gone" and (last_gone is None or now - last_gone >= gap):
                count, last_gone = count + 1, now
                strong = strong + 1 if check.strong else 0  # a weak "gone" breaks the streak
            conn.execute(
                "UPDATE entries SET last_check = ?, last_outcome = ?, gone_count = ?,"
                " strong_gone_count = ?, last_gone = ? WHERE id = ?",
                (now, check.outcome, count, strong, last_gone, entry_id),
            )
            status = row["status"]
            if check.outcome == "online" and status == "takedown" and row["removed_at"]:
                conn.execute("UPDATE entries SET removed_at = NULL WHERE id = ?", (entry_id,))
            if check.outcome == "online" and status == "removal_pending":
                conn.execute(
                    "UPDATE entries SET status = 'active', removed_at = NULL WHERE id = ?",
                    (entry_id,),
                )
                self._audit(conn, actor, "entry.back_online", entry_id, check.detail)
                return "back_online"
            if count < self.policy.gone_threshold or status not in ("active", "takedown"):
                return None
            if row["removed_at"] is not None and status == "takedown":
                return None  # already waiting for an officer's confirmation
            auto = self.policy.removal_policy == "auto" and strong >= self.policy.gone_threshold
            kind = "strong (name gone from every resolver)" if auto else "weak"
            reason = f"{count} consecutive checks found the content gone ({check.detail}); {kind}"
            conn.execute("UPDATE entries SET removed_at = ? WHERE id = ?", (now, entry_id))
            if auto:
                self.store.delist_in_transaction(actor, entry_id, reason, cause="removed_at_source")
                return "removed_at_source"
            new_status = "removal_pending" if status == "active" else status
            conn.execute(
                "UPDATE entries SET status = ?, status_reason = ? WHERE id = ?",
                (new_status, reason, entry_id),
            )
            # A takedown entry is not listed: it stays in takedown, marked for confirmation.
            self._audit(
                conn, actor, "entry.removal_pending", entry_id, reason, evidence=check.evidence
            )
            return "removal_pending"

    def confirm_removal(self, actor: Principal, entry_id: int) -> None:
        self.store.require(actor, "delist")
        with self.store.db.write() as conn:
            row = self._entry(conn, entry_id)
            marked = row["status"] == "takedown" and row["removed_at"] is not None
            if row["status"] != "removal_pending" and not marked:
                raise Conflict("not_removal_pending", f"entry {entry_id} is {row['status']}")
            self.store.delist_in_transaction(
                actor, entry_id, "removal at source confirmed", cause="removed_at_source"
            )

    def checks(self, actor: Principal, entry_id: int, limit: int = 50) -> list[dict]:
        self.store.require(actor, "read")
        with self.store.db.read() as conn:
            self._entry(conn, entry_id)
            rows = conn.execute(
                "SELECT time, outcome, detail, http_status, redirect, address FROM checks"
                " WHERE entry_id = ? ORDER BY id DESC LIMIT ?",
                (entry_id, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ review dates

    def review_due(self, actor: Principal) -> list[dict]:
        """Listed entries past their review date, with the date they lapse."""
        self.store.require(actor, "read")
        grace = int(self.policy.review_grace_days * DAY)
        with self.store.db.read() as conn:
            rows = conn.execute(
                f"SELECT id, review_date, last_outcome, last_check FROM entries"
                f" WHERE status IN {LISTED_SQL} AND review_date <= ? ORDER BY review_date",
                (self.store.now(),),
            ).fetchall()
        return [{**dict(r), "lapses": r["review_date"] + grace} for r in rows]

    def reverify(self, actor: Principal, entry_id: int, note: str = "") -> int:
        """An officer re-verified the content: a new review date."""
        self.store.require(actor, "add")
        with self.store.db.write() as conn:
            row = self._entry(conn, entry_id)
            if row["status"] not in LISTED_STATUSES:
                raise Conflict("not_listed", f"entry {entry_id} is {row['status']}")
            review = self.store.now() + self.store.review_days * DAY
            conn.execute("UPDATE entries SET review_date = ? WHERE id = ?", (review, entry_id))
            self._audit(
                conn, actor, "entry.reverify", entry_id, note.strip()[:500], review_date=review
            )
            return review

    def lapse_overdue(self, actor: Principal = SYSTEM) -> list[int]:
        """Delist entries whose review date passed more than the grace period ago."""
        cutoff = self.store.now() - int(self.policy.review_grace_days * DAY)
        with self.store.db.write() as conn:
            rows = conn.execute(
                "SELECT id FROM entries WHERE status = 'active' AND review_date <= ?", (cutoff,)
            ).fetchall()
            for r in rows:
                self.store.delist_in_transaction(
                    actor, r["id"], "review date passed without re-verification", cause="lapsed"
                )
        return [r["id"] for r in rows]

    # ------------------------------------------------------------------ report

    def report(self, actor: Principal) -> dict:
        """Figures for oversight and management; nothing that reveals a listed value."""
        self.store.require(actor, "read")
        now = self.store.now()
        with self.store.db.read() as conn:
            by_status = dict(
                conn.execute("SELECT status, count(*) FROM entries GROUP BY status").fetchall()
            )
            by_cause = dict(
                conn.execute(
                    "SELECT delist_cause, count(*) FROM entries WHERE status = 'delisted'"
                    " GROUP BY delist_cause"
                ).fetchall()
            )
            live = conn.execute(
                f"SELECT hosting_country, approved, created, status FROM entries"
                f" WHERE status IN {LIVE_SQL}"
            ).fetchall()
            removed = conn.execute(
                "SELECT COALESCE(approved, created) AS start, removed_at FROM entries"
                " WHERE removed_at IS NOT NULL AND delist_cause = 'removed_at_source'"
            ).fetchall()
            complaints = dict(
                conn.execute("SELECT status, count(*) FROM complaints GROUP BY status").fetchall()
            )
        countries = Counter(r["hosting_country"] for r in live if r["status"] in LISTED_STATUSES)
        ages: Counter[str] = Counter()
        for r in live:
            if r["status"] not in LISTED_STATUSES:
                continue
            days = (now - (r["approved"] or r["created"])) / DAY
            ages[
                "< 7 days"
                if days < 7
                else "7-30 days"
                if days < 30
                else "30-90 days"
                if days < 90
                else "> 90 days"
            ] += 1
        by_month: dict[str, list[float]] = {}
        for r in removed:
            month = time.strftime("%Y-%m", time.gmtime(r["removed_at"]))
            by_month.setdefault(month, []).append((r["removed_at"] - r["start"]) / HOUR)
        removal = {
            month: {
                "removed": len(hours),
                "median_hours": round(statistics.median(hours), 1),
                "p90_hours": round(_percentile(hours, 0.9), 1),
            }
            for month, hours in sorted(by_month.items())
        }
        return {
            "time": now,
            "entries_by_status": by_status,
            "delisted_by_cause": {k or "officer": v for k, v in by_cause.items()},
            "listed_by_hosting_country": dict(countries.most_common()),
            "listed_by_age": dict(ages),
            "time_to_removal_by_month": removal,
            "complaints_by_status": complaints,
        }


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
