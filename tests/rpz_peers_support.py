"""PowerDNS Recursor and Knot Resolver as RPZ consumers on loopback, from generated configs.

The same configurations docs/rpz.md documents (PowerDNS: rpzPrimary with TSIG, refresh, packet
cache bound, seed/dump files; Knot: policy.rpz on an exported file, ahead of the forwarding rule),
with ports and paths of a temporary directory. Used by tests/test_rpz_pdns_knot.py and bench/rpz.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rpz_fixtures import Peer, binary, free_port


def pdns_lua(
    zone: str,
    primary: str,
    *,
    key_name: str,
    algorithm: str,
    secret_b64: str,
    refresh: int,
    seed_file: Path | None,
    policy_name: str = "cordon",
) -> str:
    """The rpzPrimary() call of docs/rpz.md (PowerDNS Recursor 4.5+ Lua configuration)."""
    seed = f'    seedFile = "{seed_file}",\n    dumpFile = "{seed_file}",\n' if seed_file else ""
    return f"""rpzPrimary("{primary}", "{zone}", {{
    tsigname = "{key_name}",
    tsigalgo = "{algorithm}",
    tsigsecret = "{secret_b64}",
    refresh = {refresh},
{seed}    policyName = "{policy_name}",
}})
"""


def pdns_peer(
    workdir: Path,
    zone: str,
    primary_port: int,
    upstream_port: int,
    *,
    key_name: str,
    secret_b64: str,
    algorithm: str = "hmac-sha256",
    refresh: int = 5,
    packetcache_ttl: int = 5,
    port: int | None = None,
    seed: bool = True,
) -> Peer:
    """PowerDNS Recursor taking the zone with TSIG-signed IXFR every `refresh` seconds, its
    packet cache bounded by `packetcache_ttl`, forwarding everything else to the upstream."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    seed_file = workdir / "rpz.zone"
    lua = workdir / "rpz.lua"
    lua.write_text(
        pdns_lua(
            zone,
            f"127.0.0.1:{primary_port}",
            key_name=key_name,
            algorithm=algorithm,
            secret_b64=secret_b64,
            refresh=refresh,
            seed_file=seed_file if seed else None,
        )
    )
    (workdir / "recursor.conf").write_text(
        f"""local-address=127.0.0.1
local-port={port}
socket-dir={workdir}
lua-config-file={lua}
forward-zones-recurse=.=127.0.0.1:{upstream_port}
dont-query=
allow-from=127.0.0.0/8
threads=1
pdns-distributes-queries=no
packetcache-ttl={packetcache_ttl}
packetcache-servfail-ttl={min(packetcache_ttl, 60)}
dnssec=off
quiet=no
loglevel=6
"""
    )
    return Peer(
        "pdns",
        port,
        workdir,
        log_path=workdir / "pdns.log",
        argv=[
            binary("pdns_recursor"),
            f"--config-dir={workdir}",
            "--daemon=no",
            "--disable-syslog",
            "--log-timestamp=yes",
        ],
    )


def pdns_control(peer: Peer, *args: str, timeout: float = 10) -> str:
    """rec_control against the peer's control socket (stdout)."""
    out = subprocess.run(
        [binary("rec_control"), f"--socket-dir={peer.workdir}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.stdout + out.stderr


def pdns_serial(peer: Peer, policy_name: str = "cordon") -> int | None:
    """The serial PowerDNS enforces: its in-memory policy zone dumped with `rec_control
    dump-rpz <policyName> FILE` (dig ... SOA does not show it), as docs/rpz.md says."""
    dump = peer.workdir / "serial-check.zone"
    dump.unlink(missing_ok=True)
    pdns_control(peer, "dump-rpz", policy_name, str(dump))
    try:
        text = dump.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()  # "zone. IN SOA mname rname serial ..." (no TTL)
        if "SOA" in parts[:4]:
            serial = parts[parts.index("SOA") + 3]
            return int(serial) if serial.isdigit() else None
    return None


def kresd_conf(zone_file: Path, upstream: str) -> str:
    """The kresd.conf lines of docs/rpz.md: the RPZ rule first, watched, then forwarding."""
    return f"""-- Cordon RPZ: before any FORWARD/STUB rule, or it is bypassed
policy.add(policy.rpz(policy.DENY_MSG('blocked by the national list'), '{zone_file}', true))
policy.add(policy.all(policy.STUB({{'{upstream}'}})))
"""


def kresd_peer(
    workdir: Path,
    zone_file: Path,
    upstream_port: int,
    *,
    port: int | None = None,
) -> Peer:
    """Knot Resolver 5 loading the exported zone file and watching it for changes."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "kresd.conf"
    conf.write_text(
        f"""net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})
net.ipv6 = false
cache.open(10 * MB, 'lmdb://{workdir}/cache')
log_level('info')
modules.unload('ta_update')
modules.unload('detect_time_jump')
trust_anchors.remove('.')
{kresd_conf(zone_file, f"127.0.0.1@{upstream_port}")}"""
    )
    return Peer(
        "kresd",
        port,
        workdir,
        log_path=workdir / "kresd.log",
        argv=[binary("kresd"), "-n", "-c", str(conf), str(workdir)],
    )
