#!/usr/bin/env python3
"""Publisher figures: first publish of a big list, a small change on it (fast path), compact().

Usage: python bench/publish.py [--entries 1000000] [--changes 5] [--dir DIR]

Writes real files (with fsync) under a temporary directory, or --dir. The peer measured in the
same run is the synchronous path: the same 10-entry change with its snapshots encoded before
the notifications (what every publish would cost without the lagging-snapshot design).
Entries are random placeholder names; nothing touches the network.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.authority.publisher import Publisher
from blocklist.state import Entry, Kind
from signing import generate_key, issue_certificate, public_key_raw


def random_entries(n: int, start_id: int) -> list[Entry]:
    rnd = os.urandom(6 * n)
    return [
        Entry.from_value(
            f"{rnd[6 * i : 6 * i + 6].hex()}.blocked{i}.example", start_id + i, Kind.DOMAIN
        )
        for i in range(n)
    ]


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return result, time.perf_counter() - t0


class Changes:
    """10-entry changes: 5 removals of listed entries, 5 new entries."""

    def __init__(self, listed: list[bytes], next_id: int) -> None:
        self.listed = listed
        self.next_id = next_id

    def __call__(self) -> tuple[list[bytes], list[Entry]]:
        removed = sorted(self.listed.pop() for _ in range(5))
        added = random_entries(5, self.next_id)
        self.next_id += 5
        self.listed[:0] = [e.digest for e in added]
        return removed, added


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(directory: Path, n: int, changes: int) -> None:
    root, signer = generate_key(), generate_key()
    now = int(time.time())
    certs = [issue_certificate(root, public_key_raw(signer), "signing", now - 60, now + 86400)]
    pub = Publisher(
        directory, "bench", "Bench Authority", signer, certs, pinned_root=public_key_raw(root)
    )

    entries, t_gen = timed(random_entries, n, 1)
    entries.sort(key=lambda e: e.digest)
    print(f"{n:,} entries generated in {t_gen:.2f}s")
    first, t_first = timed(pub.publish, [], entries)
    change = Changes([e.digest for e in entries], n + 1)
    random.shuffle(change.listed)
    del entries
    print(f"first publish (both snapshots, synchronous): {t_first:.2f}s -> serial {first.serial}")
    print(f"  directory: {dir_size(directory) / 1e6:.1f} MB")

    fast = []
    for _ in range(changes):
        result, t = timed(pub.publish, *change())
        fast.append(t)
    t_fast = statistics.median(fast)
    print(
        f"10-entry change, fast path ({changes} runs):"
        f" median {t_fast * 1000:.0f} ms, max {max(fast) * 1000:.0f} ms"
        f" -> serial {result.serial} (snapshot lags, {changes} bridge deltas)"
    )

    _, t_compact = timed(pub.compact)
    print(
        f"compact() (materialise values, encode + write both snapshots, re-sign): {t_compact:.2f}s"
    )

    # What an API server does: compact in a thread right after a publish; meanwhile the next
    # change arrives and competes with the compaction for the GIL.
    pub.publish(*change())
    worker = threading.Thread(target=pub.compact)
    worker.start()
    time.sleep(0.05)
    busy = []
    while worker.is_alive() and len(busy) < changes:
        _, t = timed(pub.publish, *change())
        busy.append(t)
    worker.join()
    if busy:
        print(
            f"10-entry change while compact() runs in a thread ({len(busy)} runs):"
            f" median {statistics.median(busy) * 1000:.0f} ms, max {max(busy) * 1000:.0f} ms"
        )
    pub.compact()

    # The peer: the same kind of change with snapshots written synchronously.
    pub._sync_limit = n * 10  # bench only: force the synchronous path
    sync = []
    for _ in range(max(1, changes // 2)):
        _, t = timed(pub.publish, *change())
        sync.append(t)
    t_sync = statistics.median(sync)
    print(
        f"10-entry change, synchronous snapshots: median {t_sync * 1000:.0f} ms"
        f" -> fast path is {t_sync / t_fast:.0f}x faster"
    )

    _, t_load = timed(Publisher, directory, "bench", "Bench Authority", signer, certs)
    print(f"restart: load() of the {n:,}-entry plain state: {t_load:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="publication directory (default: a temp dir)")
    args = parser.parse_args()
    if args.dir:
        run(args.dir, args.entries, args.changes)
    else:
        with tempfile.TemporaryDirectory(prefix="cordon-bench-") as tmp:
            run(Path(tmp) / "publish", args.entries, args.changes)


if __name__ == "__main__":
    main()
