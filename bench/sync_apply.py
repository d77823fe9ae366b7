#!/usr/bin/env python3
"""Sync client apply cost: a 100-entry delta on a big list, step by step, and the start-up load.

Usage: python bench/sync_apply.py [--entries 1000000] [--repeat 5] [--dir DIR]

Builds an N-entry hashed state with the library (random placeholder names), a signing chain
made here, serial 1 and a delta to serial 2 (50 entries removed, 50 added) with its signed
notification — exactly the bytes an authority would serve. Then times, in this process, what
the ASP sync client does with them (blocklist/sync/engine.py, blocklist/sync/verified.py):

  verify     open_notification (bundle, certificate chain, Ed25519 signature, strict JSON)
             + check_notification (list, edition, expiry, rollback)
  file check size + SHA-256 of the downloaded delta against the signed notification
  decode     decode_delta (bounded inflate, order and kind checks)
  apply      ListState.apply (binary search + slicing of the packed columns)
  checksum   SHA-256 over the new state's columns (the base's is already known)
  rails      the protected-name, growth and shrink checks
  persist    verified.save: encode the state (zlib level 0), write, fsync, rename, fsync dir
  total      engine.update (all of the above but persist, via an in-memory fetch) + persist
  load       verified.load at start-up: read, re-verify the notification, decode, checksum

Each step runs --repeat times on fresh objects (median and max shown). Files are written under
a temporary directory (or --dir); the load is from the page cache (the file was just written).
No network, no server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.artefacts import (
    apply_delta,
    check_file,
    decode_delta,
    encode_delta,
    encode_snapshot,
    make_delta,
)
from blocklist.notification import (
    DeltaRef,
    Notification,
    SnapshotRef,
    check_notification,
    open_notification,
    sign_notification,
)
from blocklist.state import Edition, Entry, Kind, ListState
from blocklist.sync import verified as persist
from blocklist.sync.config import RailsSection
from blocklist.sync.engine import Result, Settings, update
from blocklist.sync.rails import Rails
from blocklist.sync.verified import VerifiedList
from signing import generate_key, issue_certificate, public_key_raw

LIST_ID = "national"


def random_entries(n: int, start_id: int = 1) -> list[Entry]:
    rnd = os.urandom(6 * n)
    return [
        Entry.from_value(
            f"{rnd[6 * i : 6 * i + 6].hex()}.blocked{i % 97}.example", start_id + i, Kind.DOMAIN
        )
        for i in range(n)
    ]


def fresh(state: ListState) -> ListState:
    """The same columns without a cached checksum."""
    return ListState(state.digests, state.ids, state.kinds, state.values)


class Timer:
    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.rows: list[tuple[str, list[float]]] = []

    def run(self, name: str, fn, setup=None):
        times = []
        result = None
        for _ in range(self.repeat):
            arg = setup() if setup else None
            gc.collect()
            t0 = time.perf_counter()
            result = fn(arg) if setup else fn()
            times.append(time.perf_counter() - t0)
        self.rows.append((name, times))
        return result

    def print(self) -> None:
        print(f"{'step':<20} {'median':>10} {'max':>10}")
        for name, times in self.rows:
            print(f"{name:<20} {statistics.median(times) * 1000:8.2f}ms {max(times) * 1000:8.2f}ms")


def bench(n: int, repeat: int, directory: Path) -> None:
    root, signer = generate_key(), generate_key()
    now = int(time.time())
    certs = [issue_certificate(root, public_key_raw(signer), "signing", now - 60, now + 86400)]
    pinned = [public_key_raw(root)]

    t0 = time.perf_counter()
    entries = random_entries(n)
    base = ListState.from_entries(entries)
    print(
        f"built a {n:,}-entry state in {time.perf_counter() - t0:.1f}s "
        f"({len(base.digests) + len(base.ids) + len(base.kinds):,} bytes of columns)"
    )
    session = uuid.uuid4()
    snap1 = encode_snapshot(base, LIST_ID, Edition.HASHED, session, 1)

    def note(serial: int, state: ListState, deltas: list[DeltaRef]) -> bytes:
        return sign_notification(
            Notification(
                list_id=LIST_ID,
                edition="hashed",
                session=str(session),
                serial=serial,
                created=now,
                expires=now + 86400,
                state_checksum=state.checksum.hex(),
                entry_count=len(state),
                snapshot=SnapshotRef(
                    uri=f"snapshot-{session}-1.bin",
                    size=len(snap1),
                    sha256=hashlib.sha256(snap1).hexdigest(),
                    serial=1,
                ),
                deltas=deltas,
            ),
            signer,
            certs,
        )

    note1 = note(1, base, [])
    current = VerifiedList(base, open_notification(note1, pinned, now), note1, now, 1)

    # The change: 50 listed entries removed, 50 new ones added.
    removed = sorted(e.digest for e in entries[: n // 2 : max(1, n // 100)][:50])
    added = sorted(random_entries(50, n + 1), key=lambda e: e.digest)
    del entries
    target = base.apply(removed, added)
    delta_bytes = encode_delta(
        make_delta(base, target, LIST_ID, Edition.HASHED, session, 1, 2, removed, added)
    )
    uri = f"delta-{session}-1-2.bin"
    ref = DeltaRef(
        uri=uri,
        size=len(delta_bytes),
        sha256=hashlib.sha256(delta_bytes).hexdigest(),
        from_serial=1,
        to_serial=2,
    )
    note2 = note(2, target, [ref])
    print(
        f"delta: {len(removed)} removed + {len(added)} added, {len(delta_bytes):,} bytes; "
        f"notification {len(note2):,} bytes"
    )

    timer = Timer(repeat)
    settings = Settings(pinned, LIST_ID, "hashed", 20_000_000)
    rails = Rails(RailsSection(protected_names=["www.protected.example", "news.example"]))

    def verify():
        verified = open_notification(note2, pinned, now)
        check_notification(verified, now=now, list_id=LIST_ID, edition="hashed", current_serial=1)
        return verified

    verified = timer.run("verify", verify)
    timer.run("file check", lambda: check_file(delta_bytes, ref.size, ref.sha256, "delta"))
    delta = timer.run("decode", lambda: decode_delta(delta_bytes))
    # The base's checksum is cached (it was computed when serial 1 was verified), as in a client.
    result = timer.run("apply", lambda: base.apply(delta.removed, delta.added))
    timer.run("checksum", lambda s: s.checksum, setup=lambda: fresh(result))
    assert result.checksum == delta.result_checksum == bytes.fromhex(verified.state_checksum)
    timer.run("rails", lambda: rails.check(base, result, False))
    new = VerifiedList(result, verified, note2, now, 2)
    state_dir = directory / "sync-state"
    persist.save(state_dir, current)  # an existing state.bin, as on an ASP: save replaces it
    timer.run(
        "persist",
        lambda v: persist.save(state_dir, v),
        setup=lambda: VerifiedList(fresh(result), verified, note2, now, 2),
    )

    async def fetch(name: str, size: int) -> bytes:
        assert name == uri
        return delta_bytes

    def whole() -> None:
        outcome = asyncio.run(
            update(current, note2, fetch, settings=settings, rails=rails, now=now)
        )
        assert outcome.result is Result.APPLIED and outcome.path == "deltas"
        persist.save(state_dir, outcome.verified)

    timer.run("total", whole)
    cross = timer.run("decode+apply_delta", lambda: apply_delta(base, decode_delta(delta_bytes)))
    assert cross.checksum == result.checksum
    size = (state_dir / persist.STATE_FILE).stat().st_size
    loaded = timer.run("load", lambda: persist.load(state_dir, pinned, 20_000_000))
    assert loaded is not None and loaded.serial == 2 and loaded.checksum == new.checksum
    print(f"state.bin: {size / 1e6:.1f} MB; {repeat} runs per step")
    timer.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="where to write state.bin (default: a temp dir)")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        bench(args.entries, args.repeat, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="cordon-bench-") as tmp:
            bench(args.entries, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
