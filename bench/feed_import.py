#!/usr/bin/env python3
"""Feed update cost at the authority's store: a whole feed file applied as one batch, against
the same lines through the ordinary batch import, in the same run.

Usage: python bench/feed_import.py [--lines 100000] [--churn 0.01]

Three steps on real SQLite files in a temporary directory, random placeholder hosts:
  1. peer: `import_batch` of N lines (canonical forms, duplicate check, one batch);
  2. ours: `apply_feed` of the same N lines as a feed's first update (canonical forms, rails,
     diff against the feed's previous items, one batch, trusted: accepted);
  3. ours: the next update of that feed with `churn` of the lines replaced (diff, a small batch,
     delistings with cause `feed`).
Prints seconds and lines per second for each, and ours/peer.
"""

from __future__ import annotations

import argparse
import random
import string
import tempfile
import time
from pathlib import Path

from blocklist.authority.batches import ImportLine
from blocklist.authority.feeds import FeedItem
from blocklist.authority.store import SYSTEM, Store


def hosts(n: int, rng: random.Random) -> list[str]:
    def label() -> str:
        return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(6, 14)))

    return [f"{label()}.{label()}.example" for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--churn", type=float, default=0.01)
    args = parser.parse_args()
    rng = random.Random(7)
    names = hosts(args.lines, rng)
    with tempfile.TemporaryDirectory() as tmp:
        peer = Store(Path(tmp) / "peer.db", bulk_share=100)
        peer.bootstrap_admin("admin")
        officer = peer.authenticate(peer.add_officer(SYSTEM, "alice", "officer")[1])
        lines = [ImportLine(i, n, None, "NL", "ev-1") for i, n in enumerate(names, 1)]
        t0 = time.perf_counter()
        report = peer.import_batch(officer, lines)
        peer_s = time.perf_counter() - t0
        assert report.accepted == args.lines
        peer.close()

        ours = Store(Path(tmp) / "ours.db", bulk_share=1e9)  # no bulk hold on an empty list
        ours.bootstrap_admin("admin")
        admin = ours.authenticate(ours.add_officer(SYSTEM, "ada", "admin")[1])
        ours.add_feed(
            admin, name="bench", source="file", format="text", policy="trusted", period=86400
        )
        olga = ours.authenticate(ours.add_officer(SYSTEM, "olga", "oversight")[1])
        ours.confirm_feed(olga, "bench")
        items = [FeedItem(i, n, raw=n) for i, n in enumerate(names, 1)]
        t0 = time.perf_counter()
        first = ours.apply_feed("bench", items)
        first_s = time.perf_counter() - t0
        assert first.added == args.lines and first.batch_status == "accepted"
        k = int(args.lines * args.churn)
        changed = names[k:] + hosts(k, rng)
        items = [FeedItem(i, n, raw=n) for i, n in enumerate(changed, 1)]
        t0 = time.perf_counter()
        second = ours.apply_feed("bench", items)
        second_s = time.perf_counter() - t0
        assert second.added == k and second.delisted == k
        ours.close()
    n = args.lines
    print(f"lines: {n}, churn: {k} replaced (machine shared with other developers)")
    print(f"peer  batch import          {peer_s:7.2f} s  {n / peer_s:9.0f} lines/s")
    print(f"ours  feed first update     {first_s:7.2f} s  {n / first_s:9.0f} lines/s")
    print(f"ours  feed update, churn    {second_s:7.2f} s  {n / second_s:9.0f} lines/s")
    print(f"ratio first update / batch import: {first_s / peer_s:.2f}")
    print(f"ratio churn update / batch import: {second_s / peer_s:.2f}")


if __name__ == "__main__":
    main()
