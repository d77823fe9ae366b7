#!/usr/bin/env python3
"""List format figures: snapshot size, encode and verify+decode time, delta apply, query digests.

Usage: python bench/list_formats.py [--sizes 10000,100000,1000000]

Everything runs in this process on random placeholder names; nothing touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.artefacts import (
    apply_delta,
    check_file,
    decode_delta,
    decode_snapshot,
    encode_delta,
    encode_snapshot,
    make_delta,
)
from blocklist.digests import query_digests, wire_name_to_dotted
from blocklist.notification import Notification, SnapshotRef, open_notification, sign_notification
from blocklist.state import Edition, Entry, Kind, ListState
from signing import generate_key, issue_certificate, public_key_raw


def random_entries(n: int, start_id: int = 1) -> list[Entry]:
    rnd = os.urandom(6 * n)
    out = []
    for i in range(n):
        name = f"{rnd[6 * i : 6 * i + 6].hex()}.blocked{i % 97}.example"
        out.append(Entry.from_value(name, start_id + i, Kind.DOMAIN))
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def bench_size(n: int, root, signer, certs) -> None:
    entries = random_entries(n)
    state, t_build = timed(ListState.from_entries, entries, True)
    session = uuid.uuid4()
    hashed, t_enc = timed(encode_snapshot, state, "bench", Edition.HASHED, session, 1)
    plain, t_enc_plain = timed(encode_snapshot, state, "bench", Edition.PLAIN, session, 1)
    now = int(time.time())
    note = Notification(
        list_id="bench",
        edition="hashed",
        session=str(session),
        serial=1,
        created=now,
        expires=now + 86400,
        state_checksum=state.checksum.hex(),
        entry_count=n,
        snapshot=SnapshotRef(
            uri="s.bin", size=len(hashed), sha256=hashlib.sha256(hashed).hexdigest(), serial=1
        ),
    )
    note_bytes = sign_notification(note, signer, certs)

    def verify_and_decode() -> ListState:
        verified = open_notification(note_bytes, [root], now)
        check_file(hashed, verified.snapshot.size, verified.snapshot.sha256, "snapshot")
        _, got = decode_snapshot(hashed)
        assert got.checksum.hex() == verified.state_checksum
        return got

    _, t_dec = timed(verify_and_decode)
    _, t_dec_plain = timed(decode_snapshot, plain)

    # A 100-entry change: 50 removed, 50 added.
    removed = sorted(e.digest for e in entries[:50])
    added = sorted(random_entries(50, start_id=n + 1), key=lambda e: e.digest)
    hashed_state = state.hashed()
    result = hashed_state.apply(removed, added)
    delta = make_delta(hashed_state, result, "bench", Edition.HASHED, session, 1, 2, removed, added)
    delta_bytes = encode_delta(delta)
    _, t_apply = timed(lambda: apply_delta(hashed_state, decode_delta(delta_bytes)))

    print(
        f"{n:>9,} entries | hashed {len(hashed) / n:5.1f} B/entry,"
        f" plain {len(plain) / n:5.1f} B/entry"
        f" | build {t_build:6.2f}s encode {t_enc:6.2f}s (plain {t_enc_plain:6.2f}s)"
        f" | verify+decode {t_dec:6.3f}s (plain decode {t_dec_plain:6.2f}s)"
        f" | 100-entry delta {len(delta_bytes):,} B, decode+apply {t_apply * 1000:6.1f} ms"
    )


def bench_query_digests() -> None:
    names = [b"www.blocked3.example", b"a.b.c.d.cdn.example", b"example"]
    for name in names:
        loops = 200_000
        t = timeit.timeit(lambda name=name: query_digests(name), number=loops)
        print(f"query digests for {name.decode():<22} {t / loops * 1e6:5.2f} µs")
    wire = b"\x03WwW\x08bloCked3\x07example\x00"
    t = timeit.timeit(lambda: query_digests(wire_name_to_dotted(wire)), number=200_000)
    print(f"wire name -> digests (3 labels, 0x20 case) {t / 200_000 * 1e6:5.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    root = generate_key()
    signer = generate_key()
    now = int(time.time())
    certs = [issue_certificate(root, public_key_raw(signer), "signing", now - 60, now + 86400)]
    root_pub = public_key_raw(root)
    for n in (int(s) for s in args.sizes.split(",")):
        bench_size(n, root_pub, signer, certs)
    bench_query_digests()


if __name__ == "__main__":
    main()
