"""External feeds: lists the authority subscribes to, each with its own trust and policy.

A feed's current content is kept as its items (digest, kind, value when known, the feed's own
id). Each verified update is diffed against them: additions go through the authority's rails
(protected names, public suffixes) and become one batch — accepted by an approver (`review`)
or at once (`trusted`, audited as such, unless it crosses the bulk-share limit); removals
delist, with cause `feed`, the entries only that feed brought in and no other feed still
holds. A name already on the list (a local entry, or another feed's) is linked, not duplicated,
so it stays when the feed drops it. Exclusions are local per feed, with a reason.

Fetching and verifying is the sources' work (blocklist/authority/feedsources/); this module
sees only verified items.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from blocklist.authority import audit
from blocklist.authority.bulk import drain
from blocklist.authority.db import Database
from blocklist.authority.entries import DAY, check_not_puppet, clean_text
from blocklist.authority.errors import AuthorityError, Conflict, Invalid, NotFound
from blocklist.authority.roles import Principal, require
from blocklist.authority.statuses import LISTED_SQL, LISTED_STATUSES, LIVE_SQL
from blocklist.digests import DIGEST_SIZE, digest, query_digests
from blocklist.domains import ProtectedNames, canonical_domain
from blocklist.entries import guess_kind
from blocklist.state import Kind
from blocklist.urls import url_expression

SOURCES = ("cordon", "https", "file")
FORMATS = ("text", "csv", "cordon")
POLICIES = ("review", "trusted")
FEED_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Reasons a rail holds a feed item back instead of listing it.
RAIL_REASONS = frozenset({"protected_name", "public_suffix"})
# Fields of `trust` never shown back (a partner authority's ASP token).
SECRET_TRUST = frozenset({"token"})


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One line of a verified feed: a value to canonicalise, or a digest without plaintext."""

    line: int
    ref: str  # the feed's own id for the item ("" when the feed has none)
    raw: str | None = None
    digest: bytes | None = None
    kind: Kind | None = None


@dataclass
class FeedUpdate:
    feed: str
    added: int = 0
    removed: int = 0
    linked: int = 0  # names already on the list, now also held by this feed
    held: list[dict] = field(default_factory=list)  # refused by a rail
    refused: list[dict] = field(default_factory=list)  # malformed lines
    excluded: int = 0
    delisted: int = 0
    batch_id: int | None = None
    batch_status: str | None = None
    items: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def unchecked_value(kind: Kind, raw: str) -> str:
    """The canonical form without the rails: to record what a rail holds back."""
    return canonical_domain(raw) if kind == Kind.DOMAIN else url_expression(raw)


def check_feed_name(name: str) -> str:
    if not FEED_NAME.match(name):
        raise Invalid(
            "invalid_name",
            f"feed name {name[:80]!r} must be 1-64 of a-z, 0-9, '.', '_', '-'",
        )
    return name


def _public(row: sqlite3.Row, now: int) -> dict:
    feed = dict(row)
    trust = json.loads(feed.pop("trust") or "{}")
    feed["trust"] = {k: ("(set)" if k in SECRET_TRUST else v) for k, v in trust.items() if v}
    feed.pop("cursor", None)
    feed["stale"] = is_stale(row, now)
    return feed


def is_stale(row: sqlite3.Row, now: int) -> bool:
    """Not refreshed within its expected period (never refreshed counts from its creation)."""
    since = row["last_refresh"] if row["last_refresh"] is not None else row["created"]
    return now - since > row["period"]


class Feeds:
    db: Database
    protected: ProtectedNames
    bulk_share: float
    review_days: int
    canonical: Callable[..., tuple[Kind, str, bytes]]

    # ------------------------------------------------------------------ definitions

    def add_feed(
        self,
        actor: Principal,
        *,
        name: str,
        source: str,
        format: str,
        policy: str,
        url: str = "",
        trust: dict | None = None,
        period: int,
    ) -> dict:
        require(actor, "manage")
        check_feed_name(name)
        if source not in SOURCES or format not in FORMATS or policy not in POLICIES:
            raise Invalid("invalid_feed", "unknown source, format or policy")
        with self.db.write() as conn:
            try:
                conn.execute(
                    "INSERT INTO feeds (name, source, format, policy, url, trust, period,"
                    " created_by, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        source,
                        format,
                        policy,
                        url,
                        json.dumps(trust or {}, sort_keys=True),
                        period,
                        actor.id,
                        self.db.now(),
                    ),
                )
            except sqlite3.IntegrityError:
                if conn.execute("SELECT 1 FROM feeds WHERE name = ?", (name,)).fetchone():
                    raise Conflict("duplicate", f"a feed named {name!r} exists already") from None
                raise
            audit.append(
                conn,
                time=self.db.now(),
                actor=actor.label,
                action="feed.add",
                detail={
                    "feed": name,
                    "source": source,
                    "format": format,
                    "policy": policy,
                    "url": url,
                    "trust": {k: v for k, v in (trust or {}).items() if k not in SECRET_TRUST},
                },
            )
            return _public(self._feed_row(conn, name), self.db.now())

    def confirm_feed(self, actor: Principal, name: str) -> dict:
        """A second person (admin or oversight) confirms a feed, so that a `trusted` policy
        takes effect: no single admin can make a source of their own list without approval."""
        require(actor, "confirm")
        with self.db.write() as conn:
            row = self._feed_row(conn, name)
            if row["confirmed_by"] is not None:
                raise Conflict("confirmed", f"feed {name} is already confirmed")
            check_not_puppet(conn, actor, row["created_by"], f"feed {name}", "confirm")
            now = self.db.now()
            conn.execute(
                "UPDATE feeds SET confirmed_by = ?, confirmed = ? WHERE id = ?",
                (actor.id, now, row["id"]),
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="feed.confirm",
                detail={"feed": name, "policy": row["policy"]},
            )
            return _public(self._feed_row(conn, name), now)

    @staticmethod
    def _feed_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM feeds WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"feed {name[:80]!r} does not exist")
        return row

    def feed_config(self, name: str) -> dict:
        """Everything a source needs to fetch and verify (the token included): not for display."""
        with self.db.read() as conn:
            row = self._feed_row(conn, name)
        feed = dict(row)
        feed["trust"] = json.loads(row["trust"] or "{}")
        feed["cursor"] = json.loads(row["cursor"] or "{}")
        return feed

    def feed_names(self) -> list[str]:
        with self.db.read() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM feeds ORDER BY name")]

    def list_feeds(self, actor: Principal) -> list[dict]:
        require(actor, "read")
        now = self.db.now()
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM feeds ORDER BY name").fetchall()
            counts = self._feed_counts(conn)
        return [{**_public(r, now), "counts": counts.get(r["id"], {})} for r in rows]

    def get_feed(self, actor: Principal, name: str, limit: int = 100) -> dict:
        require(actor, "read")
        now = self.db.now()
        with self.db.read() as conn:
            row = self._feed_row(conn, name)
            held = conn.execute(
                "SELECT value, ref, reason FROM feed_items WHERE feed_id = ? AND status = 'held'"
                " ORDER BY value LIMIT ?",
                (row["id"], limit),
            ).fetchall()
            excluded = conn.execute(
                "SELECT x.value, x.reason, x.time, o.name AS excluded_by FROM feed_exclusions x"
                " JOIN officers o ON o.id = x.excluded_by WHERE feed_id = ? ORDER BY x.value"
                " LIMIT ?",
                (row["id"], limit),
            ).fetchall()
            counts = self._feed_counts(conn).get(row["id"], {})
        return {
            **_public(row, now),
            "counts": counts,
            "held": [dict(r) for r in held],
            "exclusions": [dict(r) for r in excluded],
        }

    @staticmethod
    def _feed_counts(conn: sqlite3.Connection) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {}
        for feed_id, status, n in conn.execute(
            "SELECT feed_id, status, count(*) FROM feed_items GROUP BY feed_id, status"
        ):
            counts.setdefault(feed_id, {})[status] = n
        for feed_id, n in conn.execute(
            f"SELECT f.feed_id, count(*) FROM feed_items f JOIN entries e ON e.id = f.entry_id"
            f" WHERE e.status IN {LISTED_SQL} GROUP BY f.feed_id"
        ):
            counts.setdefault(feed_id, {})["listed"] = n
        return counts

    def feed_report(self) -> dict[str, dict[str, int]]:
        """Per feed: items linked, held, excluded, and entries it holds on the list."""
        with self.db.read() as conn:
            names = dict(conn.execute("SELECT id, name FROM feeds").fetchall())
            counts = self._feed_counts(conn)
        return {names[i]: counts.get(i, {}) for i in sorted(names, key=names.get)}

    # ------------------------------------------------------------------ exclusions

    def exclude(self, actor: Principal, name: str, raw: str, reason: str) -> dict:
        """Never list `raw` from this feed. If the feed brought a listed entry in alone, its
        delisting is requested (a second person confirms, as for any manual delisting); a
        pending one is withdrawn."""
        require(actor, "delist")
        reason = clean_text(reason, "reason", required=True)
        kind, value, digest = self._exclusion_digest(raw)
        with self.db.write() as conn:
            feed = self._feed_row(conn, name)
            now = self.db.now()
            try:
                conn.execute(
                    "INSERT INTO feed_exclusions (feed_id, digest, value, reason, excluded_by,"
                    " time) VALUES (?, ?, ?, ?, ?, ?)",
                    (feed["id"], digest, value, reason, actor.id, now),
                )
            except sqlite3.IntegrityError:
                raise Conflict("duplicate", f"{value!r} is already excluded from {name}") from None
            item = conn.execute(
                "SELECT * FROM feed_items WHERE feed_id = ? AND digest = ?", (feed["id"], digest)
            ).fetchone()
            delisted = 0
            request: dict | None = None
            if item is not None:
                conn.execute(
                    "UPDATE feed_items SET status = 'excluded', entry_id = NULL, reason = ?"
                    " WHERE feed_id = ? AND digest = ?",
                    (reason, feed["id"], digest),
                )
                if item["entry_id"] is not None:
                    delisted = self._release(conn, feed, item["entry_id"], actor, reason)
                    requested = conn.execute(
                        "SELECT id FROM delist_requests WHERE entry_id = ? AND status = 'pending'"
                        " AND requested_by = ?",
                        (item["entry_id"], actor.id),
                    ).fetchone()
                    if requested is not None:
                        request = {"entry_id": item["entry_id"], "request": requested[0]}
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="feed.exclude",
                detail={"feed": name, "value": value, "delisted": delisted, "request": request},
                reason=reason,
            )
            return {
                "feed": name,
                "value": value,
                "kind": kind.name.lower(),
                "delisted": delisted,
                "delist_request": request,
            }

    def _exclusion_digest(self, raw: str) -> tuple[Kind, str, bytes]:
        text = raw.strip()
        if len(text) == 2 * DIGEST_SIZE and all(c in "0123456789abcdef" for c in text.lower()):
            return Kind.DOMAIN, text.lower(), bytes.fromhex(text)
        try:
            return self.canonical(text, None)
        except Invalid as exc:
            if exc.extra.get("reason") in RAIL_REASONS:
                # A name the rails hold anyway may still be excluded.
                kind = guess_kind(text)
                value = unchecked_value(kind, text)
                return kind, value, digest(value)
            raise

    # ------------------------------------------------------------------ refresh outcome

    def record_feed_failure(self, name: str, error: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE feeds SET last_attempt = ?, last_error = ?, failures = failures + 1"
                " WHERE name = ?",
                (self.db.now(), error[:1000], name),
            )
            audit.append(
                conn,
                time=self.db.now(),
                actor=f"feed:{name}",
                action="feed.refused",
                detail={"feed": name, "error": error[:1000]},
            )

    def _reverify(self, conn: sqlite3.Connection, feed_id: int, now: int) -> None:
        """A verified update that still lists the feed's entries re-verifies them: they do
        not lapse while their feed keeps them (the feed is their evidence)."""
        conn.execute(
            f"UPDATE entries SET review_date = ? WHERE feed_id = ? AND status IN {LISTED_SQL}"
            " AND review_date < ?",
            (now + self.review_days * DAY, feed_id, now + self.review_days * DAY),
        )

    def record_feed_unchanged(self, name: str, cursor: dict | None = None) -> None:
        """A verified answer with nothing new (304, same serial): the feed is fresh."""
        with self.db.write() as conn:
            self._reverify(conn, self._feed_row(conn, name)["id"], self.db.now())
            conn.execute(
                "UPDATE feeds SET last_attempt = ?, last_refresh = ?, last_error = NULL,"
                " failures = 0, stale = 0, cursor = COALESCE(?, cursor) WHERE name = ?",
                (
                    self.db.now(),
                    self.db.now(),
                    json.dumps(cursor) if cursor is not None else None,
                    name,
                ),
            )

    def mark_stale(self) -> list[str]:
        """Feeds that just went stale (each is reported once per staleness, and audited)."""
        now = self.db.now()
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM feeds WHERE stale = 0").fetchall()
        if not any(is_stale(r, now) for r in rows):
            return []  # the usual case: no write transaction at all
        with self.db.write() as conn:
            newly = [
                r for r in conn.execute("SELECT * FROM feeds WHERE stale = 0") if is_stale(r, now)
            ]
            for r in newly:
                conn.execute("UPDATE feeds SET stale = 1 WHERE id = ?", (r["id"],))
                audit.append(
                    conn,
                    time=now,
                    actor=f"feed:{r['name']}",
                    action="feed.stale",
                    detail={"feed": r["name"], "last_refresh": r["last_refresh"]},
                )
        return [r["name"] for r in newly]

    # ------------------------------------------------------------------ applying an update

    def _classify(
        self, items: Iterable[FeedItem], result: FeedUpdate, known: dict[str, tuple[int, bytes]]
    ) -> dict[bytes, tuple[int, str | None, str, str | None]]:
        """Canonical (kind, value, ref, held reason) per digest; malformed lines refused.

        `known`: canonical values the feed listed last time. A line equal to one is already in
        canonical form and passed the rails; only the protected names (which may have changed
        since) are checked again, so a small change to a large feed costs little."""
        protected_digests = {d: name for name in self.protected for d in query_digests(name)}
        out: dict[bytes, tuple[int, str | None, str, str | None]] = {}
        for item in items:
            try:
                hit = known.get(item.raw) if item.raw is not None else None
                if (
                    hit is not None
                    and item.kind in (None, hit[0])
                    and (hit[0] != Kind.DOMAIN or self.protected.conflict(item.raw) is None)
                ):
                    out.setdefault(hit[1], (hit[0], item.raw, item.ref, None))
                    continue
                if item.digest is not None:
                    if len(item.digest) != DIGEST_SIZE:
                        raise Invalid("invalid_digest", "a digest must be 32 bytes (SHA-256)")
                    kind = item.kind or Kind.DOMAIN
                    if kind not in (Kind.DOMAIN, Kind.URL):
                        raise Invalid("bad_kind", f"a feed item may not be of kind {kind.name}")
                    hit = protected_digests.get(item.digest) if kind == Kind.DOMAIN else None
                    held = "protected_name" if hit else None
                    out.setdefault(item.digest, (int(kind), None, item.ref, held))
                    continue
                try:
                    kind, value, d = self.canonical(item.raw or "", item.kind)
                except Invalid as exc:
                    reason = exc.extra.get("reason")
                    if reason not in RAIL_REASONS:
                        raise
                    result.held.append(
                        {"line": item.line, "input": (item.raw or "")[:200], "reason": reason}
                    )
                    kind = item.kind or guess_kind(item.raw or "")
                    value = unchecked_value(kind, item.raw or "")
                    out.setdefault(digest(value), (int(kind), value, item.ref, str(reason)))
                    continue
                out.setdefault(d, (int(kind), value, item.ref, None))
            except AuthorityError as exc:
                if len(result.refused) < 1000:
                    result.refused.append(
                        {
                            "line": item.line,
                            "input": (item.raw or "")[:200],
                            "reason": exc.extra.get("reason", exc.code),
                            "message": str(exc),
                        }
                    )
                else:
                    result.refused[-1]["more"] = result.refused[-1].get("more", 0) + 1
        return out

    def apply_feed(
        self,
        name: str,
        items: Iterable[FeedItem],
        *,
        etag: str = "",
        last_modified: str = "",
        cursor: dict | None = None,
        source: str = "",
        refused: list[dict] | None = None,
    ) -> FeedUpdate:
        """Make the feed's items what `items` (its verified, complete content) says.
        `refused`: lines the parser could not read, reported and audited with the rest."""
        result = FeedUpdate(name, refused=list(refused or []))
        with self.db.read() as conn:
            known = {
                r[0]: (r[1], bytes(r[2]))
                for r in conn.execute(
                    "SELECT i.value, i.kind, i.digest FROM feed_items i JOIN feeds f"
                    " ON f.id = i.feed_id WHERE f.name = ? AND i.status = 'linked'"
                    " AND i.value IS NOT NULL AND i.value != ''",
                    (name,),
                )
            }
        wanted = self._classify(items, result, known)
        known.clear()
        result.items = len(wanted)
        actor_label = f"feed:{name}"
        with self.db.write() as conn:
            feed = self._feed_row(conn, name)
            fid = feed["id"]
            now = self.db.now()
            current = {
                bytes(r[0]): (r[1], r[2])
                for r in conn.execute(
                    "SELECT digest, status, entry_id FROM feed_items WHERE feed_id = ?", (fid,)
                )
            }
            excluded = {
                bytes(r[0])
                for r in conn.execute(
                    "SELECT digest FROM feed_exclusions WHERE feed_id = ?", (fid,)
                )
            }
            live = {
                bytes(r[0]): r[1]
                for r in conn.execute(f"SELECT digest, id FROM entries WHERE status IN {LIVE_SQL}")
            }
            # Removals first: a name that left the feed is released.
            gone = [d for d in current if d not in wanted]
            for d in gone:
                _status, entry_id = current[d]
                conn.execute("DELETE FROM feed_items WHERE feed_id = ? AND digest = ?", (fid, d))
                if entry_id is not None:
                    result.delisted += self._release(
                        conn, feed, entry_id, None, f"removed from feed {name}"
                    )
            result.removed = len(gone)
            new_items, fresh = [], []
            for d, (kind, value, ref, held) in wanted.items():
                if d in current:
                    if current[d][0] == "held" and held is None and d not in excluded:
                        # A rail no longer holds it (the protected list changed): list it now.
                        conn.execute(
                            "DELETE FROM feed_items WHERE feed_id = ? AND digest = ?", (fid, d)
                        )
                    else:
                        continue
                if d in excluded:
                    new_items.append((fid, d, kind, value, ref, "excluded", None, "excluded"))
                    result.excluded += 1
                elif held is not None:
                    new_items.append((fid, d, kind, value, ref, "held", None, held))
                elif d in live:
                    new_items.append((fid, d, kind, value, ref, "linked", live[d], None))
                    result.linked += 1
                else:
                    fresh.append((d, kind, value, ref))
            if fresh:
                self._feed_batch(conn, feed, fresh, result, now, new_items, source)
            conn.executemany(
                "INSERT INTO feed_items (feed_id, digest, kind, value, ref, status, entry_id,"
                " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                new_items,
            )
            result.added = len(fresh)
            drain(new_items)
            drain(fresh)
            conn.execute(
                "UPDATE feeds SET last_attempt = ?, last_refresh = ?, last_error = NULL,"
                " failures = 0, stale = 0, etag = ?, last_modified = ?,"
                " cursor = COALESCE(?, cursor) WHERE id = ?",
                (
                    now,
                    now,
                    etag,
                    last_modified,
                    json.dumps(cursor) if cursor is not None else None,
                    fid,
                ),
            )
            self._reverify(conn, fid, now)
            if result.added or result.removed or result.held or result.refused:
                audit.append(
                    conn,
                    time=now,
                    actor=actor_label,
                    action="feed.update",
                    detail={
                        "feed": name,
                        "source": source[:200],
                        "added": result.added,
                        "removed": result.removed,
                        "linked": result.linked,
                        "held": len(result.held),
                        "refused": len(result.refused),
                        "delisted": result.delisted,
                        "batch": result.batch_id,
                    },
                )
        wanted.clear()
        return result

    def _feed_batch(
        self,
        conn: sqlite3.Connection,
        feed: sqlite3.Row,
        fresh: list[tuple[bytes, int, str | None, str]],
        result: FeedUpdate,
        now: int,
        new_items: list,
        source: str,
    ) -> None:
        """The feed's additions as one batch, accepted at once under a `trusted` policy."""
        name = feed["name"]
        cur = conn.execute(
            "INSERT INTO batches (created_by, created, source, size, status, feed_id)"
            " VALUES (?, ?, ?, ?, 'pending', ?)",
            (feed["created_by"], now, f"feed:{name} {source}"[:200], len(fresh), feed["id"]),
        )
        batch_id = cur.lastrowid
        evidence = f"feed:{name}"
        first = conn.execute("SELECT COALESCE(max(id), 0) FROM entries").fetchone()[0]
        conn.executemany(
            "INSERT INTO entries (kind, value, digest, category, hosting_country, evidence,"
            " status, added_by, batch_id, created, feed_id, feed_ref)"
            " VALUES (?, ?, ?, 'csam', '', ?, 'pending', ?, ?, ?, ?, ?)",
            (
                (kind, value or "", d, evidence, feed["created_by"], batch_id, now, feed["id"], ref)
                for d, kind, value, ref in fresh
            ),
        )
        ids = {
            bytes(r[0]): r[1]
            for r in conn.execute(
                "SELECT digest, id FROM entries WHERE batch_id = ? AND id > ?", (batch_id, first)
            )
        }
        new_items.extend(
            (feed["id"], d, kind, value, ref, "linked", ids[d], None)
            for d, kind, value, ref in fresh
        )
        result.batch_id, result.batch_status = batch_id, "pending"
        detail = {"batch": batch_id, "entries": len(fresh), "feed": name, "policy": feed["policy"]}
        audit.append(conn, time=now, actor=f"feed:{name}", action="batch.import", detail=detail)
        if feed["policy"] != "trusted":
            return
        if feed["confirmed_by"] is None:
            # Until a second person confirms the feed, its batches wait for an approver.
            audit.append(
                conn,
                time=now,
                actor=f"feed:{name}",
                action="feed.unconfirmed",
                detail=detail,
            )
            return
        active = conn.execute(f"SELECT count(*) FROM entries WHERE status IN {LISTED_SQL}")
        share = len(fresh) / max(active.fetchone()[0], 1)
        if share > self.bulk_share:
            # A trusted feed still cannot swing the list past the bulk limit unseen.
            audit.append(
                conn,
                time=now,
                actor=f"feed:{name}",
                action="feed.bulk_held",
                detail={**detail, "share": round(share, 4)},
            )
            return
        conn.execute(
            "UPDATE entries SET status = 'active', approved = ?, review_date = ?"
            " WHERE batch_id = ? AND status = 'pending'",
            (now, now + self.review_days * DAY, batch_id),
        )
        conn.execute(
            "UPDATE batches SET status = 'accepted', decided = ?, reason = ? WHERE id = ?",
            (now, f"trusted feed {name}", batch_id),
        )
        audit.append(
            conn,
            time=now,
            actor=f"feed:{name}",
            action="batch.accept",
            detail={**detail, "automatic": True},
            reason=f"trusted feed {name}",
        )
        result.batch_status = "accepted"

    def _release(
        self,
        conn: sqlite3.Connection,
        feed: sqlite3.Row,
        entry_id: int,
        actor: Principal | None,
        reason: str,
    ) -> int:
        """Delist an entry a feed let go of, unless someone else still holds it: an entry
        added locally, or another feed's item. Returns 1 when it was delisted or withdrawn."""
        row = conn.execute(
            "SELECT id, status, feed_id FROM entries WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is None or row["feed_id"] is None:
            return 0  # a local entry: the officers' decision, not the feed's
        others = conn.execute(
            "SELECT count(*) FROM feed_items WHERE entry_id = ? AND status = 'linked'",
            (entry_id,),
        ).fetchone()[0]
        if others:
            return 0
        now = self.db.now()
        label = actor.label if actor is not None else f"feed:{feed['name']}"
        if row["status"] == "pending":
            conn.execute(
                "UPDATE entries SET status = 'rejected', approved = ?, status_reason = ?,"
                " delist_cause = 'feed' WHERE id = ?",
                (now, reason, entry_id),
            )
            action = "entry.withdraw"
        elif row["status"] in LISTED_STATUSES and actor is not None:
            # An officer's exclusion is a manual delisting: a second person confirms it.
            self.delist(actor, entry_id, reason)  # type: ignore[attr-defined]
            return 0
        elif row["status"] in LISTED_STATUSES:
            feed_actor = Principal("system", 0, f"feed:{feed['name']}")
            self.delist_in_transaction(  # type: ignore[attr-defined]
                feed_actor, entry_id, reason, cause="feed", detail={"feed": feed["name"]}
            )
            return 1
        else:
            return 0
        audit.append(
            conn,
            time=now,
            actor=label,
            action=action,
            entry_id=entry_id,
            reason=reason,
            detail={"cause": "feed", "feed": feed["name"]},
        )
        return 1
