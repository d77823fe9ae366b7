#!/usr/bin/env python3
"""Cost of the list-trust checks an ASP runs on every update, against what they sit next to.

Usage: python bench/trust_checks.py [--rounds 2000] [--entries 1000000]

1. Verifying a notification: a bundle carrying root document 1 (3 roots, 2 must sign), one
   root rotation and a key set, against the legacy bundle (one signing certificate). Both
   verify the notification's own signature too. Figures: microseconds per verification, ratio.
2. The churn rail (entries added and removed, counted by digest) on a list of --entries with
   1% replaced, against applying that change to the list (`ListState.apply`), which every
   update pays anyway. Figures: milliseconds each, ratio.

Single process, no network. The machine may be shared: compare the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from blocklist.notification import Notification, SnapshotRef, open_notification, sign_notification
from blocklist.state import Entry, Kind, ListState
from blocklist.sync.rails import churn
from signing import Role, generate_key, issue_certificate, public_key_raw
from signing.trust import DocType, SetKey, keyset_payload, root_payload, sign_document

NOW = 1_800_000_000


def note() -> Notification:
    return Notification(
        list_id="national",
        edition="hashed",
        session=str(uuid.uuid4()),
        serial=7,
        created=NOW - 60,
        expires=NOW + 86400,
        state_checksum="0" * 64,
        entry_count=0,
        snapshot=SnapshotRef(uri="snapshot.bin", size=1, sha256="0" * 64, serial=7),
    )


def timed(fn, rounds: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        samples.append((time.perf_counter() - start) / rounds)
    return statistics.median(samples)


def bench_verify(rounds: int) -> None:
    signer = generate_key()
    legacy_root = generate_key()
    cert = issue_certificate(
        legacy_root, public_key_raw(signer), Role.SIGNING, NOW - 9, NOW + 999, "s"
    )
    legacy = sign_notification(note(), signer, [cert])

    old = [generate_key() for _ in range(3)]
    new = [generate_key() for _ in range(3)]
    raw = lambda keys: [public_key_raw(k) for k in keys]  # noqa: E731
    v1 = sign_document(old, DocType.ROOT, root_payload(raw(old), 2, 1, NOW))
    v2 = sign_document([*old[:2], *new], DocType.ROOT, root_payload(raw(new), 2, 2, NOW))
    keyset = sign_document(
        new[:2],
        DocType.KEY_SET,
        keyset_payload(
            version=5,
            root_version=2,
            issued=NOW,
            keys=[SetKey(public_key_raw(signer), "s", NOW - 9, NOW + 999)],
        ),
    )
    modern = sign_notification(note(), signer, [v1, v2, keyset])
    t_legacy = timed(lambda: open_notification(legacy, [public_key_raw(legacy_root)], NOW), rounds)
    t_modern = timed(lambda: open_notification(modern, raw(old), NOW), rounds // 4)
    print(f"notification verify, legacy chain (1 cert):          {t_legacy * 1e6:8.1f} µs")
    print(
        f"notification verify, 2-of-3 roots + rotation + set:  {t_modern * 1e6:8.1f} µs"
        f"  ({t_modern / t_legacy:.1f}x legacy; {len(modern)} vs {len(legacy)} bytes)"
    )


def bench_churn(entries: int) -> None:
    old = ListState.from_entries(
        [Entry.from_value(f"h{i}.example", i + 1, Kind.DOMAIN) for i in range(entries)]
    ).hashed()
    k = entries // 100
    removed = [e.digest for e in list(old)[:k]]
    added = [Entry.from_value(f"n{i}.example", entries + i + 1, Kind.DOMAIN) for i in range(k)]
    added.sort(key=lambda e: e.digest)
    removed.sort()
    start = time.perf_counter()
    new = old.apply(removed, added)
    t_apply = time.perf_counter() - start
    start = time.perf_counter()
    got = churn(old, new)
    t_churn = time.perf_counter() - start
    assert got == (k, k)
    print(f"apply 1% change to {entries} entries:  {t_apply * 1e3:8.1f} ms")
    print(
        f"churn rail on the same change:       {t_churn * 1e3:8.1f} ms"
        f"  ({t_churn / t_apply:.1f}x apply)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    bench_verify(args.rounds)
    bench_churn(args.entries)


if __name__ == "__main__":
    main()
