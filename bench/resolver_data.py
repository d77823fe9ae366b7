"""Data for bench/resolver.sh: a signed list of N names, the same names as an RPZ zone for
Unbound, dnsperf query files, and configs for both resolvers. Placeholder names only.

    python bench/resolver_data.py OUT_DIR [--entries N] [--port P] [--unbound-port U]
                                          [--upstream-port R]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
import uuid
from pathlib import Path

from blocklist.artefacts import encode_snapshot
from blocklist.digests import digest
from blocklist.notification import Notification, SnapshotRef, sign_notification
from blocklist.state import Edition, ListState
from blocklist.sync import verified as persist
from blocklist.sync.verified import VerifiedList
from signing import format_public_key, generate_key, issue_certificate, public_key_raw

STOP_V4 = "192.0.2.80"


def listed_name(i: int) -> str:
    return f"site{i}.blocked.example"


def build_state(n: int) -> ListState:
    digests = sorted(digest(listed_name(i)) for i in range(n))
    return ListState(
        b"".join(digests),
        b"".join(i.to_bytes(8, "big") for i in range(1, n + 1)),
        b"\x01" * n,
    )


def write_state(state_dir: Path, state: ListState) -> str:
    now = int(time.time())
    root, signer = generate_key(), generate_key()
    cert = issue_certificate(root, public_key_raw(signer), "signing", now - 60, now + 7 * 86400)
    session = uuid.uuid4()
    snapshot = encode_snapshot(state, "national", Edition.HASHED, session, 1)
    note = Notification(
        list_id="national",
        authority="Bench Authority",
        edition="hashed",
        session=str(session),
        serial=1,
        created=now - 60,
        expires=now + 7 * 86400,
        state_checksum=state.checksum.hex(),
        entry_count=len(state),
        snapshot=SnapshotRef(
            uri="snapshot-1.bin",
            size=len(snapshot),
            sha256=hashlib.sha256(snapshot).hexdigest(),
            serial=1,
        ),
    )
    data = sign_notification(note, signer, [cert])
    persist.save(state_dir, VerifiedList(state, note, data, now, 1))
    return format_public_key(public_key_raw(root))


CACHED_NAMES = 100_000


def cordon_config(state_dir: Path, root_key: str, args: argparse.Namespace, server: str) -> str:
    return f"""[sync]
root_keys = ["{root_key}"]
state_dir = "{state_dir}"

[server]
listen = ["127.0.0.1"]
port = {args.port}
list_poll_interval = 0.05
{server}
[upstream]
servers = ["127.0.0.1:{args.upstream_port}"]

[cache]
max_entries = 2000000
max_bytes = 536870912

[blocking]
ipv4 = "{STOP_V4}"
stop_page_url = "http://stop.isp.example/"

[metrics]
port = {args.port + 10}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=5370)
    parser.add_argument("--unbound-port", type=int, default=5371)
    parser.add_argument("--upstream-port", type=int, default=5372)
    parser.add_argument("--queries", type=int, default=200_000)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    n = args.entries
    rng = random.Random(1)

    started = time.time()
    root_key = write_state(out / "state", build_state(n))
    print(f"list: {n} entries in {time.time() - started:.1f} s -> {out / 'state'}")

    with open(out / "rpz.zone", "w") as f:
        f.write("$TTL 60\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n@ NS localhost.\n")
        for i in range(n):
            name = listed_name(i)
            f.write(f"{name} A {STOP_V4}\n*.{name} A {STOP_V4}\n")

    q = args.queries
    with open(out / "q-blocked-repeat.txt", "w") as f:  # 10k listed names, asked again and again
        for _ in range(q):
            f.write(f"www.{listed_name(rng.randrange(min(n, 10_000)))} A\n")
    with open(out / "q-blocked-unique.txt", "w") as f:  # 200k names, each below a listed domain
        for j in range(200_000):
            f.write(f"u{j}.{listed_name(rng.randrange(n))} A\n")
    cached = [f"host{i}.cached.example A\n" for i in range(CACHED_NAMES)]
    rng.shuffle(cached)
    (out / "q-cached.txt").write_text("".join(cached))
    print(f"query files in {out}")

    empty_key = write_state(out / "state-empty", build_state(0))
    for name, state_dir, key, extra in (
        ("cordon.toml", "state", root_key, ""),
        ("cordon-python.toml", "state", root_key, "fast_path = false\n"),
        ("cordon-2.toml", "state", root_key, "workers = 2\n"),
        ("cordon-empty.toml", "state-empty", empty_key, ""),
    ):
        (out / name).write_text(cordon_config(out / state_dir, key, args, extra))
    common = """    username: ""
    chroot: ""
    directory: "{out}"
    pidfile: ""
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 0
    interface: 127.0.0.1
    access-control: 127.0.0.0/8 allow
    do-ip6: no
    num-threads: 1
    so-reuseport: yes
    module-config: "{modules}"
    do-not-query-localhost: no
    harden-referral-path: no
    qname-minimisation: no
"""
    (out / "rpz-empty.zone").write_text(
        "$TTL 60\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n@ NS localhost.\n"
    )
    for name, threads, zone in (
        ("unbound.conf", 1, "rpz.zone"),
        ("unbound-2.conf", 2, "rpz.zone"),
        ("unbound-empty.conf", 1, "rpz-empty.zone"),
    ):
        (out / name).write_text(
            "server:\n"
            + common.format(out=out, modules="respip iterator").replace(
                "num-threads: 1", f"num-threads: {threads}"
            )
            + f"    port: {args.unbound_port}\n"
            + "    msg-cache-size: 256m\n    rrset-cache-size: 512m\n"
            + f"\nrpz:\n    name: rpz.bench\n    zonefile: {zone}\n"
            + '\nforward-zone:\n    name: "."\n'
            + f"    forward-addr: 127.0.0.1@{args.upstream_port}\n"
        )
    (out / "upstream.conf").write_text(
        "server:\n"
        + common.format(out=out, modules="iterator")
        + f"    port: {args.upstream_port}\n"
        + '    local-zone: "cached.example." redirect\n'
        + '    local-data: "cached.example. 300 IN A 198.51.100.1"\n'
        + '    local-zone: "miss.example." redirect\n'
        + '    local-data: "miss.example. 300 IN A 198.51.100.2"\n'
        + '    local-zone: "example." static\n'
    )
    print(f"queries, RPZ zone and configs in {out}")


if __name__ == "__main__":
    main()
