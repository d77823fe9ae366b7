"""Append-only, hash-chained audit log.

Each record's hash is SHA-256(previous hash || canonical JSON of the record), so changing,
inserting or deleting any record breaks every hash after it. SQLite triggers refuse UPDATE and
DELETE on the table, but someone with write access to the file can drop them and rewrite the
whole chain consistently, so the chain alone proves nothing against them. What does: every
signed notification carries the audit head (hash and record count) at its signing, and every
ASP keeps those signed copies. `verify_chain` checks the log against such heads: a record
changed, removed or inserted before a published head changes the hash at that count.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

GENESIS = b"\0" * 32


def record_hash(
    prev: bytes,
    seq: int,
    time: int,
    actor: str,
    action: str,
    entry_id: int | None,
    detail: str,
    reason: str,
) -> bytes:
    body = json.dumps(
        [seq, time, actor, action, entry_id, detail, reason],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return hashlib.sha256(prev + body).digest()


def append(
    conn: sqlite3.Connection,
    *,
    time: int,
    actor: str,
    action: str,
    entry_id: int | None = None,
    detail: dict | None = None,
    reason: str = "",
) -> bytes:
    """Append one record; call inside the transaction that makes the change it describes."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    detail_text = json.dumps(
        detail or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    h = record_hash(prev, seq, time, actor, action, entry_id, detail_text, reason)
    conn.execute(
        "INSERT INTO audit (seq, time, actor, action, entry_id, detail, reason, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, time, actor, action, entry_id, detail_text, reason, prev, h),
    )
    return h


@dataclass(frozen=True)
class Head:
    """A commitment to the first `records` records of the log: the hash of the last of them."""

    records: int
    hash: str  # hex

    def to_dict(self) -> dict:
        return {"records": self.records, "hash": self.hash}


def head(conn: sqlite3.Connection) -> Head:
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return Head(row[0], bytes(row[1]).hex()) if row else Head(0, GENESIS.hex())


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    head: str  # hex hash of the last good record
    problem: str = ""
    # Published heads the log was checked against (records, hash), all matched when ok.
    anchors: list[dict] = field(default_factory=list)


def verify_chain(conn: sqlite3.Connection, expected: Iterable[Head] = ()) -> ChainReport:
    """Check the chain, and that it passes through every expected head.

    Without expected heads this only proves the log is self-consistent; with heads from signed
    notifications it proves no record up to the newest head was changed, removed or inserted.
    """
    anchors = sorted(set(expected), key=lambda h: h.records)
    want = {h.records: h for h in anchors}
    if len({h.records for h in anchors}) != len(anchors):
        counts = [h.records for h in anchors]
        dup = next(c for c in counts if counts.count(c) > 1)
        return ChainReport(
            False, 0, GENESIS.hex(), f"two different published heads name record {dup}"
        )
    checked = [h.to_dict() for h in anchors]
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in conn.execute(
        "SELECT seq, time, actor, action, entry_id, detail, reason, prev_hash, hash"
        " FROM audit ORDER BY seq"
    ):
        seq = row[0]
        if seq != expected_seq:
            return ChainReport(
                False, count, prev.hex(), f"record {expected_seq} is missing", checked
            )
        if bytes(row[7]) != prev:
            return ChainReport(
                False, count, prev.hex(), f"record {seq} does not follow record {seq - 1}", checked
            )
        h = record_hash(prev, seq, *row[1:7])
        if h != bytes(row[8]):
            return ChainReport(False, count, prev.hex(), f"record {seq} was altered", checked)
        prev = h
        expected_seq += 1
        count += 1
        anchor = want.get(count)
        if anchor is not None and anchor.hash != h.hex():
            return ChainReport(
                False,
                count,
                prev.hex(),
                f"the log does not match the published head at record {count}: "
                "history before it was rewritten",
                checked,
            )
    if anchors and anchors[-1].records > count:
        return ChainReport(
            False,
            count,
            prev.hex(),
            f"a published head names record {anchors[-1].records} but the log ends at "
            f"record {count}: records were removed",
            checked,
        )
    if 0 in want and want[0].hash != GENESIS.hex():
        return ChainReport(False, count, prev.hex(), "the published empty head is not genesis")
    return ChainReport(True, count, prev.hex(), "", checked)


def load_detail(text: str) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return {"unreadable": text[:200]}
    return value if isinstance(value, dict) else {"value": value}
