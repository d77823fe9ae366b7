"""PowerDNS Recursor 4.8 and Knot Resolver 5.6 enforcing the RPZ feed, with docs/rpz.md's configs.

PowerDNS transfers the zone from `resolver rpz serve` (TSIG, refresh polling: 4.8 ignores NOTIFY
for RPZ) with a bounded packet cache and a seed/dump file; Knot Resolver loads the file that
`resolver rpz export --follow --for kresd` keeps current. `resolver sync`'s part is played by
writing signed state.bin files as it does. Every wait is on an observable answer, bounded by the
propagation time docs/rpz.md gives for the configuration.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rpz_fixtures import (
    ROOT_PUB,
    STOP_HOST,
    STOP_V4,
    UPSTREAM_V4,
    Peer,
    StaticUpstream,
    dig,
    free_port,
    soa_serial,
    wait_for,
    write_list,
)
from rpz_peers_support import kresd_conf, kresd_peer, pdns_lua, pdns_peer, pdns_serial

REPO = Path(__file__).resolve().parent.parent
ZONE = "rpz.cordon.example."
STOP_V6 = "2001:db8::80"
SECRET = base64.b64encode(os.urandom(32)).decode()
POLL = 0.2  # rpz.list_poll_interval in these tests
# PowerDNS in these tests: refresh and packet-cache bound, seconds (docs/rpz.md: 15 and 15).
REFRESH, PACKETCACHE = 2, 2
PDNS_BOUND = REFRESH + PACKETCACHE + POLL + 10  # docs: refresh + packetcache-ttl, plus slack
KRESD_BOUND = POLL + 10  # docs: list_poll_interval + the export + kresd's re-read
INITIAL = ["blocked.example", "old.test", "keep.test"]


@dataclass
class Child:
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cordon(tmp: Path, name: str, *args: str) -> Child:
    log_path = tmp / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "resolver.rpz.cli", *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return Child(proc, log_path)


def write_config(tmp: Path, *, action: str, port: int = 0, extra: str = "") -> Path:
    (tmp / "tsig.key").write_text(SECRET + "\n")
    toml = tmp / "rpz.toml"
    toml.write_text(
        f"""[sync]
root_keys = ["{ROOT_PUB}"]
edition = "plain"
state_dir = "{tmp / "state"}"

[rpz]
zone = "{ZONE}"
action = "{action}"
cname_target = "{STOP_HOST}"
ipv4 = "{STOP_V4}"
ipv6 = "{STOP_V6}"
port = {port}
list_poll_interval = {POLL}

[rpz.transfer]
tsig_secret_file = "tsig.key"

[rpz.metrics]
port = {free_port()}
{extra}"""
    )
    return toml


def blocked(port: int, name: str, rdtype: str = "A") -> bool:
    answer = dig(port, name, rdtype)
    return bool(answer) and answer[0] in (STOP_HOST, STOP_V4, STOP_V6)


def allowed(port: int, name: str) -> bool:
    return dig(port, name) == [UPSTREAM_V4]


def arrives(check, bound: float, what: str, peer: Peer, *logs) -> None:
    try:
        wait_for(check, bound, 0.1)
    except TimeoutError:
        extra = "\n".join(c.log() for c in logs)
        pytest.fail(f"{peer.kind}: {what} did not arrive within {bound}s:\n{peer.log()}\n{extra}")


def check_enforcement(peer: Peer) -> None:
    """Listed name, a name below it, AAAA, and names that are not listed."""
    assert blocked(peer.port, "blocked.example"), dig(peer.port, "blocked.example")
    assert blocked(peer.port, "a.b.blocked.example")
    aaaa = dig(peer.port, "www.blocked.example", "AAAA")
    assert aaaa and aaaa[0] in (STOP_HOST, STOP_V6), aaaa
    assert allowed(peer.port, "fine.example")
    assert allowed(peer.port, "notblocked.example")  # a sibling, not a name below


@contextlib.contextmanager
def primary(tmp: Path, action: str = "cname") -> Iterator[tuple[int, Child]]:
    write_list(tmp / "state", INITIAL, serial=1)
    port = free_port()
    server = cordon(
        tmp, "serve", "serve", "--config", str(write_config(tmp, action=action, port=port))
    )
    try:
        wait_for(lambda: soa_serial(port, ZONE) == 1 or server.proc.poll() is not None, 20)
        assert server.proc.poll() is None, server.log()
        yield port, server
    finally:
        server.stop()


# ---------------------------------------------------------------------------- PowerDNS


def pdns(workdir: Path, port: int, upstream: StaticUpstream, secret: str = SECRET) -> Peer:
    """PowerDNS with docs/rpz.md's configuration, refresh and packet cache shortened."""
    return pdns_peer(
        workdir,
        ZONE,
        port,
        upstream.port,
        key_name="cordon-rpz.",
        secret_b64=secret,
        refresh=REFRESH,
        packetcache_ttl=PACKETCACHE,
    )


@pytest.mark.tools("pdns_recursor", "dig")
def test_pdns_enforces_and_follows_updates_past_its_packet_cache(tmp_path: Path) -> None:
    upstream = StaticUpstream(ttl=3600)  # long TTLs: only packetcache-ttl bounds a stale answer
    with primary(tmp_path) as (port, server):
        peer = pdns(tmp_path / "pdns", port, upstream)
        try:
            peer.start()
            arrives(lambda: blocked(peer.port, "blocked.example"), PDNS_BOUND, "first zone", peer)
            check_enforcement(peer)
            assert pdns_serial(peer) == 1  # the serial in force (dig SOA cannot show it)
            assert dig(peer.port, ZONE, "SOA") == []
            # The seed/dump file is private: it is the plain list.
            seed = peer.workdir / "rpz.zone"
            arrives(seed.exists, PDNS_BOUND, "dump file", peer)
            assert stat.S_IMODE(seed.stat().st_mode) & 0o077 == 0

            # Both answers sit in the packet cache before the publication changes them.
            assert allowed(peer.port, "new.test") and blocked(peer.port, "x.old.test")
            write_list(tmp_path / "state", ["blocked.example", "keep.test", "new.test"], serial=2)
            arrives(lambda: blocked(peer.port, "new.test"), PDNS_BOUND, "add", peer, server)
            arrives(lambda: allowed(peer.port, "x.old.test"), PDNS_BOUND, "delist", peer, server)
            assert blocked(peer.port, "www.new.test") and blocked(peer.port, "keep.test")
            assert pdns_serial(peer) == 2
        finally:
            peer.stop()
            upstream.close()


@pytest.mark.tools("pdns_recursor", "dig")
def test_pdns_wrong_tsig_key_is_refused_and_the_seed_file_keeps_blocking(tmp_path: Path) -> None:
    upstream = StaticUpstream()
    with primary(tmp_path) as (port, server):
        wrong = base64.b64encode(b"w" * 32).decode()
        bad = pdns(tmp_path / "bad", port, upstream, wrong)
        good = pdns(tmp_path / "good", port, upstream)
        try:
            bad.start()
            # The server refused its signed transfer (the event), so nothing is blocked.
            arrives(lambda: "tsig_badsig" in server.log(), PDNS_BOUND, "refusal", bad, server)
            assert allowed(bad.port, "blocked.example")
            assert pdns_serial(bad) == 0  # no zone loaded yet
            bad.stop()

            good.start()
            arrives(lambda: blocked(good.port, "blocked.example"), PDNS_BOUND, "zone", good)
            arrives((good.workdir / "rpz.zone").exists, PDNS_BOUND, "dump file", good)
            good.stop()
        finally:
            bad.stop()
            good.stop()
    # The primary is gone: restarted, PowerDNS blocks from its seed file at once.
    try:
        good.start()
        assert blocked(good.port, "blocked.example") and blocked(good.port, "x.keep.test")
        assert allowed(good.port, "fine.example")
        # PowerDNS 4.8 reports serial 0 for a zone read from the seed file until a transfer.
        assert pdns_serial(good) in (0, 1)
    finally:
        good.stop()
        upstream.close()


# ------------------------------------------------------------------------ Knot Resolver


def kresd_setup(tmp: Path, upstream: StaticUpstream) -> tuple[Path, Path, Peer]:
    write_list(tmp / "state", INITIAL, serial=1)
    toml = write_config(tmp, action="cname")  # --for kresd turns it into local data
    zone_file = tmp / "export" / "rpz.zone"
    zone_file.parent.mkdir()
    return toml, zone_file, kresd_peer(tmp / "kresd", zone_file, upstream.port)


def follow(tmp: Path, toml: Path, zone_file: Path) -> Child:
    args = ["export", "--config", str(toml), "--output", str(zone_file), "--for", "kresd"]
    return cordon(tmp, "export", *args, "--follow")


def kresd_serial(peer: Peer) -> int | None:
    """The list serial kresd enforces, from the export's TXT record (docs/rpz.md)."""
    answer = dig(peer.port, "serial.cordon-rpz.invalid", "TXT")
    if answer and answer[0].startswith('"cordon list serial '):
        return int(answer[0].strip('"').rsplit(" ", 1)[1])
    return None


@pytest.mark.tools("kresd", "dig")
def test_kresd_enforces_the_followed_export_and_its_updates(tmp_path: Path) -> None:
    upstream = StaticUpstream(ttl=3600)
    toml, zone_file, peer = kresd_setup(tmp_path, upstream)
    exporter = follow(tmp_path, toml, zone_file)
    try:
        arrives(zone_file.exists, KRESD_BOUND, "first export", peer, exporter)
        assert stat.S_IMODE(zone_file.stat().st_mode) == 0o640
        assert " CNAME " not in zone_file.read_text()  # kresd would ignore it: local data instead
        peer.start()
        check_enforcement(peer)
        assert dig(peer.port, "blocked.example", "AAAA") == [STOP_V6]
        assert kresd_serial(peer) == 1

        assert allowed(peer.port, "new.test") and blocked(peer.port, "x.old.test")  # cached
        write_list(tmp_path / "state", ["blocked.example", "keep.test", "new.test"], serial=2)
        arrives(lambda: blocked(peer.port, "new.test"), KRESD_BOUND, "add", peer, exporter)
        arrives(lambda: allowed(peer.port, "x.old.test"), KRESD_BOUND, "delist", peer, exporter)
        assert blocked(peer.port, "www.new.test") and blocked(peer.port, "keep.test")
        assert kresd_serial(peer) == 2
        assert not [p for p in zone_file.parent.iterdir() if p.name.endswith(".tmp")]
    finally:
        peer.stop()
        exporter.stop()
        upstream.close()


@pytest.mark.tools("kresd", "dig")
def test_kresd_missing_or_damaged_export_is_repaired(tmp_path: Path) -> None:
    upstream = StaticUpstream()
    toml, zone_file, peer = kresd_setup(tmp_path, upstream)
    exporter = None
    try:
        # Knot Resolver refuses to start without the file: the unit orders it after the export.
        with pytest.raises(RuntimeError, match="failed to parse"):
            peer.start()
        exporter = follow(tmp_path, toml, zone_file)
        arrives(zone_file.exists, KRESD_BOUND, "first export", peer, exporter)
        peer.start()
        assert blocked(peer.port, "blocked.example") and blocked(peer.port, "keep.test")

        # Removed under the follower: written again, and kresd re-reads it.
        zone_file.unlink()
        arrives(zone_file.exists, KRESD_BOUND, "repair after removal", peer, exporter)
        assert "removed or changed by someone else" in exporter.log()

        # A damaged file makes kresd keep only the records before the damage (the hazard a
        # non-atomic writer creates). With the follower stopped, the damage is seen...
        exporter.stop()
        text = zone_file.read_text()
        cut = text.index("keep.test")
        zone_file.write_text(text[:cut] + "keep.test 60 IN A not-an-address\n")
        arrives(lambda: allowed(peer.port, "keep.test"), KRESD_BOUND, "damage", peer)
        assert "invalid address" in peer.log()
        # ...and a follower starting up always writes a whole file first.
        exporter = follow(tmp_path, toml, zone_file)
        arrives(lambda: blocked(peer.port, "keep.test"), KRESD_BOUND, "repair", peer, exporter)
        assert blocked(peer.port, "blocked.example")
        # kresd's file watch still works after all that: the next update arrives.
        write_list(tmp_path / "state", ["blocked.example", "keep.test", "late.test"], serial=2)
        arrives(lambda: blocked(peer.port, "late.test"), KRESD_BOUND, "update", peer, exporter)
    finally:
        peer.stop()
        if exporter is not None:
            exporter.stop()
        upstream.close()


def test_deploy_snippets_are_the_tested_configurations() -> None:
    deploy = REPO / "deploy" / "rpz"
    lua = pdns_lua(
        ZONE,
        "192.0.2.10:53",
        key_name="cordon-rpz.",
        algorithm="hmac-sha256",
        secret_b64="<contents of /etc/cordon/rpz-tsig.key>",
        refresh=10,
        seed_file=Path("/var/lib/pdns-recursor/rpz.cordon.example.zone"),
    )
    assert lua in (deploy / "pdns-recursor-rpz.lua").read_text()
    conf = (deploy / "pdns-recursor-rpz.conf").read_text()
    assert "\npacketcache-ttl=10\n" in conf
    kresd = kresd_conf(Path("/var/lib/cordon-rpz/rpz.zone"), "192.0.2.53")
    assert kresd in (deploy / "kresd-rpz.conf").read_text()
    docs = (REPO / "docs" / "rpz.md").read_text()
    assert lua in docs and kresd in docs
