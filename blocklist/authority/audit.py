"""Append-only, hash-chained audit log.

Each record's hash is SHA-256(previous hash || canonical JSON of the record), so changing,
inserting or deleting any record breaks every hash after it. SQLite triggers refuse UPDATE and
DELETE on the table; the chain catches what someone with raw file access does anyway. Cutting
records off the end is only detectable against a head hash kept elsewhere, which is why
`verify_chain` returns the head for officers or oversight to note down.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

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
class ChainReport:
    ok: bool
    records: int
    head: str  # hex hash of the last good record
    problem: str = ""


def verify_chain(conn: sqlite3.Connection) -> ChainReport:
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in conn.execute(
        "SELECT seq, time, actor, action, entry_id, detail, reason, prev_hash, hash"
        " FROM audit ORDER BY seq"
    ):
        seq = row[0]
        if seq != expected_seq:
            return ChainReport(False, count, prev.hex(), f"record {expected_seq} is missing")
        if bytes(row[7]) != prev:
            return ChainReport(
                False, count, prev.hex(), f"record {seq} does not follow record {seq - 1}"
            )
        h = record_hash(prev, seq, *row[1:7])
        if h != bytes(row[8]):
            return ChainReport(False, count, prev.hex(), f"record {seq} was altered")
        prev = h
        expected_seq += 1
        count += 1
    return ChainReport(True, count, prev.hex())
