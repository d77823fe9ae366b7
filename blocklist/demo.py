"""`make demo`: run what exists of Cordon locally, on placeholder names and DEMO keys.

Today that is the list itself: canonical entries, a signed notification and snapshot written to
a directory as an authority would publish them, then verified and queried as an ASP would.
Each service joins this demo as it lands.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
from pathlib import Path

from blocklist.artefacts import check_file, decode_snapshot, encode_snapshot
from blocklist.digests import query_digests
from blocklist.entries import canonical_entry, guess_kind
from blocklist.notification import (
    Notification,
    SnapshotRef,
    check_notification,
    open_notification,
    sign_notification,
)
from blocklist.state import Edition, Entry, Kind, ListState
from signing import (
    format_public_key,
    generate_key,
    issue_certificate,
    public_key_raw,
    save_private_key,
    save_public_key,
)

DEMO_ENTRIES = [
    "blocked-demo.test",
    "*.another-demo.test",
    "Bücher-Demo.test",
    "http://shared-host.example/album/42/",
]
TRY_NAMES = [
    "blocked-demo.test",
    "www.blocked-demo.test",
    "cdn.another-demo.test",
    "xn--bcher-demo-9db.test",
    "shared-host.example",
    "allowed.example",
]


def run(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory / "keys"
    publish = directory / "publish" / "hashed"
    keys.mkdir(exist_ok=True)
    publish.mkdir(parents=True, exist_ok=True)

    now = int(time.time())
    root, signer = generate_key(), generate_key()
    save_private_key(keys / "DEMO-root.key", root, overwrite=True)
    save_private_key(keys / "DEMO-signing.key", signer, overwrite=True)
    save_public_key(keys / "DEMO-root.pub", public_key_raw(root), overwrite=True)
    cert = issue_certificate(
        root, public_key_raw(signer), "signing", now - 60, now + 7 * 86400, "DEMO signing key"
    )
    print(f"DEMO root key (pin this on the ASP side): {format_public_key(public_key_raw(root))}")

    entries = []
    for i, raw in enumerate(DEMO_ENTRIES, start=1):
        kind = guess_kind(raw)
        value = canonical_entry(kind, raw)
        entries.append(Entry.from_value(value, i, kind))
        print(f"  entry {i}: {raw!r:42} -> {kind.name.lower():6} {value}")
    state = ListState.from_entries(entries, plain=True)

    session = uuid.uuid4()
    snapshot = encode_snapshot(state, "demo", Edition.HASHED, session, 1)
    snap_name = f"snapshot-{session}-1.bin"
    (publish / snap_name).write_bytes(snapshot)
    note = Notification(
        list_id="demo",
        authority="Demo Authority (DEMO KEYS, NOT FOR PRODUCTION)",
        edition="hashed",
        session=str(session),
        serial=1,
        created=now,
        expires=now + 86400,
        state_checksum=state.checksum.hex(),
        entry_count=len(state),
        snapshot=SnapshotRef(
            uri=snap_name, size=len(snapshot), sha256=hashlib.sha256(snapshot).hexdigest(), serial=1
        ),
    )
    (publish / "notification.bin").write_bytes(sign_notification(note, signer, [cert]))
    print(f"published serial 1 ({len(state)} entries) to {publish}")

    # The ASP side: verify exact bytes against the pinned root, then the snapshot by hash.
    verified = open_notification(
        (publish / "notification.bin").read_bytes(), [public_key_raw(root)], now
    )
    check_notification(verified, now=now, list_id="demo", edition="hashed", current_serial=None)
    data = (publish / verified.snapshot.uri).read_bytes()
    check_file(data, verified.snapshot.size, verified.snapshot.sha256, "snapshot")
    _, got = decode_snapshot(data)
    assert got.checksum.hex() == verified.state_checksum
    blocked = set(got.iter_digests(Kind.DOMAIN))
    print(f"verified serial {verified.serial}, checksum {verified.state_checksum[:16]}…")
    for name in TRY_NAMES:
        hit = any(d in blocked for d in query_digests(name))
        print(f"  {name:28} {'BLOCKED (stop page)' if hit else 'resolved normally'}")
    print("The authority service, sync client, resolver and stop page join this demo as they land.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("demo-state"), help="demo state directory")
    run(parser.parse_args().dir)


if __name__ == "__main__":
    main()
