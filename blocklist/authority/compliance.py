"""Acks from ASP instances, and the compliance view: who applied which serial, who is behind.

Acks live in a database file of their own (`acks.db` beside `authority.db`): they are frequent
machine writes that must never wait for an officer's batch import holding the list's write
lock, and they are not part of the audited list history.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from blocklist.authority.db import Database
from blocklist.authority.errors import Forbidden, Invalid
from blocklist.authority.principals import NAME
from blocklist.authority.roles import Principal, require

DAY = 86400
MAX_ACK_STATUS = 4000  # characters of the status JSON; larger acks are refused, never cut
ACK_MIGRATIONS = [
    """
    CREATE TABLE acks (
        asp_id INTEGER NOT NULL,
        instance TEXT NOT NULL,
        serial INTEGER NOT NULL,
        checksum BLOB NOT NULL,
        time INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (asp_id, instance)
    );
    """,
]


def open_acks(main: Database) -> Database:
    """The acks database beside the main one; acks recorded before it existed move over once."""
    path = main.path.with_name("acks.db")
    fresh = not Path(path).exists()
    acks = Database(path, main.clock, ACK_MIGRATIONS)
    if fresh:
        with main.read() as conn:
            old = conn.execute("SELECT * FROM acks").fetchall()
        if old:
            with acks.write() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO acks (asp_id, instance, serial, checksum, time, status)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [tuple(r) for r in old],
                )
    return acks


def _status_text(status: dict) -> str:
    try:
        text = json.dumps(status, sort_keys=True, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError):
        raise Invalid("invalid_status", "ack status is not plain JSON") from None
    if len(text) > MAX_ACK_STATUS:
        raise Invalid(
            "too_long",
            f"ack status is {len(text)} characters of JSON; at most {MAX_ACK_STATUS} are kept",
        )
    return text


def _status(text: str) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # written before statuses were checked
        return {"unreadable": True}
    return value if isinstance(value, dict) else {}


class Compliance:
    db: Database
    acks: Database

    def record_ack(
        self, asp: Principal, instance: str, serial: int, checksum: bytes, status: dict
    ) -> None:
        if asp.kind != "asp":
            raise Forbidden("forbidden", "only an ASP token may acknowledge a serial")
        instance = instance.strip()
        if not NAME.match(instance):
            raise Invalid("invalid_name", f"instance id {instance[:80]!r} is not valid")
        text = _status_text(status)
        with self.acks.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO acks (asp_id, instance, serial, checksum, time, status)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (asp.id, instance, serial, checksum, self.acks.now(), text),
            )

    def compliance(self, actor: Principal, deadline: int = DAY) -> dict:
        """Per ASP instance: what it applied, how far behind it is, and whether it is overdue.

        An instance is overdue when a serial it has not applied was published more than
        `deadline` seconds ago; divergent when its acked checksum is not the one published.
        """
        require(actor, "read")
        now = self.db.now()
        with self.db.read() as conn:
            pubs = {
                r["serial"]: (bytes(r["checksum"]), r["time"])
                for r in conn.execute("SELECT serial, checksum, time FROM publications")
            }
            asps = conn.execute("SELECT id, name FROM asps WHERE active = 1").fetchall()
        with self.acks.read() as conn:
            acks = conn.execute("SELECT * FROM acks").fetchall()
        newest = max(pubs, default=0)
        by_asp: dict[int, list[sqlite3.Row]] = {}
        for a in acks:
            by_asp.setdefault(a["asp_id"], []).append(a)
        rows = []
        for asp in asps:
            for a in by_asp.get(asp["id"]) or [None]:
                serial = a["serial"] if a else 0
                unapplied = [t for s, (_, t) in pubs.items() if s > serial]
                oldest_unapplied = min(unapplied, default=None)
                expected = pubs.get(serial, (None, 0))[0]
                status = _status(a["status"]) if a else {}
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
                        "held": status.get("held"),
                        "alarms": status.get("alarms") or [],
                        "status": status,
                    }
                )
        return {"newest_serial": newest, "deadline": deadline, "time": now, "instances": rows}
