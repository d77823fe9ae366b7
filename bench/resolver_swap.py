"""List hot swap under load: does answering pause, or fail, while a big list is replaced?

Starts `resolver serve` (one worker) on a list of N names, runs dnsperf on blocked names for
2 x S seconds, and halfway writes a new state.bin (serial 2: a delta of 100 more entries) as
`resolver sync` would. Prints dnsperf's figures (queries lost included) for a run without a
swap and for the run with one; the time from the new state.bin being in place to the first
answer that enforces one of the new names (the resolver's poll, load, signature and checksum
verification, index build and swap); and the build+swap time the resolver reports.
Needs dnsperf; loopback only.

    python bench/resolver_swap.py [--entries 1000000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dns.exception
import dns.message
import dns.query
import resolver_data as rd

from blocklist.artefacts import encode_snapshot
from blocklist.notification import Notification, SnapshotRef, sign_notification
from blocklist.state import Edition, ListState
from blocklist.sync import verified as persist
from blocklist.sync.verified import VerifiedList
from signing import format_public_key, generate_key, issue_certificate, public_key_raw

PORT, METRICS = 5670, 5680
DELTA = 100  # entries added by the update


def save(state_dir: Path, state: ListState, serial: int, keys) -> None:
    import hashlib

    root, signer, session = keys
    now = int(time.time())
    cert = issue_certificate(root, public_key_raw(signer), "signing", now - 60, now + 86400)
    snapshot = encode_snapshot(state, "national", Edition.HASHED, session, serial)
    note = Notification(
        list_id="national",
        authority="Bench Authority",
        edition="hashed",
        session=str(session),
        serial=serial,
        created=now - 60,
        expires=now + 86400,
        state_checksum=state.checksum.hex(),
        entry_count=len(state),
        snapshot=SnapshotRef(
            uri=f"s-{serial}.bin",
            size=len(snapshot),
            sha256=hashlib.sha256(snapshot).hexdigest(),
            serial=serial,
        ),
    )
    data = sign_notification(note, signer, [cert])
    persist.save(state_dir, VerifiedList(state, note, data, now, serial))


def dnsperf(queries: Path, seconds: int) -> dict[str, str]:
    command = ["dnsperf", "-s", "127.0.0.1", "-p", str(PORT), "-d", str(queries)]
    command += ["-l", str(seconds), "-c", "4", "-T", "1", "-q", "100"]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key in ("Queries per second", "Queries lost", "Average Latency (s)"):
            fields[key] = value.strip()
        if key == "Latency StdDev (s)":
            fields[key] = value.strip()
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cordon-swap-"))
    keys = (generate_key(), generate_key(), uuid.uuid4())
    state = rd.build_state(args.entries)
    save(work / "state", state, 1, keys)
    bigger = rd.build_state(args.entries + DELTA)
    probe = dns.message.make_query(f"www.{rd.listed_name(args.entries + DELTA // 2)}", "A")
    enforced: list[float] = []

    def swap() -> None:
        save(work / "state", bigger, 2, keys)
        placed = time.monotonic()
        while time.monotonic() - placed < 60:
            try:
                r = dns.query.udp(probe, "127.0.0.1", port=PORT, timeout=0.2)
                if any(rd.STOP_V4 in rrset.to_text() for rrset in r.answer):
                    enforced.append(time.monotonic() - placed)
                    return
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.002)

    queries = work / "q.txt"
    queries.write_text(
        "".join(f"www.{rd.listed_name(i * 7919 % args.entries)} A\n" for i in range(100_000))
    )
    (work / "cordon.toml").write_text(
        f"""[sync]
root_keys = ["{format_public_key(public_key_raw(keys[0]))}"]
state_dir = "{work / "state"}"
[server]
listen = ["127.0.0.1"]
port = {PORT}
list_poll_interval = 0.05
[upstream]
servers = ["127.0.0.1:9"]
[blocking]
ipv4 = "{rd.STOP_V4}"
[metrics]
port = {METRICS}
"""
    )
    command = [sys.executable, "-m", "resolver.cli", "serve", "--config", str(work / "cordon.toml")]
    proc = subprocess.Popen([*command, "--log-level", "warning"])
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/healthz") as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        calm = dnsperf(queries, args.seconds)
        writer = threading.Timer(args.seconds / 2, swap)
        writer.start()
        swapped = dnsperf(queries, args.seconds)
        writer.join()
        time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/healthz") as r:
            health = json.loads(r.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics") as r:
            swap_line = next(
                line
                for line in r.read().decode().splitlines()
                if line.startswith("cordon_resolver_list_swap_seconds ")
            )
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"list of {args.entries} entries; serial now {health['serial']}")
    print(f"without swap: {calm}")
    print(f"with swap:    {swapped}")
    print(f"build+swap off the event loop: {float(swap_line.split()[1]) * 1000:.0f} ms")
    if enforced:
        print(f"state.bin in place to a new name enforced: {enforced[0] * 1000:.0f} ms")
    else:
        print("a new name was never enforced")


if __name__ == "__main__":
    main()
