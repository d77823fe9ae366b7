"""Shared pieces of the plugin tests: index files as `resolver sync` writes them, real resolver
daemons (Unbound, PowerDNS Recursor, dnsdist) with the Cordon plugin on loopback ports, and an
authoritative upstream on loopback serving plain answers and CNAME chains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import tools
from resolver_fixtures import STOP_V4, STOP_V6, FakeUpstream, free_port, write_list

from blocklist.sync.index import INDEX_FILE, write_index

REPO = Path(__file__).resolve().parent.parent
UNBOUND_PLUGIN = REPO / "plugins" / "unbound" / "cordon.py"
LUA_DIR = REPO / "plugins" / "lua"
ALLOWED_V4 = "198.51.100.7"
# Debian's Unbound looks for its `unboundmodule` (python3-unbound) outside its embedded sys.path.
UNBOUND_PYTHONPATH = "/usr/lib/python3/dist-packages"


def publish(state_dir: Path, domains: Iterable[str], serial: int) -> Path:
    """Sign and persist a list as the follower does, then write its index (the subscriber)."""
    verified = write_list(state_dir, list(domains), serial)
    return write_index(state_dir, verified)


def upstream_zone() -> FakeUpstream:
    up = FakeUpstream()
    for name in ("allowed.test", "www.allowed.test", "later.test", "sub.later.test"):
        up.add(name, "A", ALLOWED_V4)
        up.add(name, "AAAA", "2001:db8::7")
    up.add("alias.allowed.test", "CNAME", "cdn.listed.test.")
    up.add("cdn.listed.test", "A", ALLOWED_V4)
    up.add("listed.test", "A", ALLOWED_V4)
    up.add("deep.www.listed.test", "A", ALLOWED_V4)
    up.add("deep.www.listed.test", "HTTPS", '1 . alpn="h2"')
    return up


@dataclass
class Daemon:
    name: str
    argv: list[str]
    port: int
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        log = open(self.workdir / f"{self.name}.log", "wb")  # noqa: SIM115 - closed with proc
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        return self

    def log(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


async def ask(port: int, name: str, rdtype: str = "A", timeout: float = 2.0) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=timeout)


async def wait_for(
    check: Callable[[], object], what: str, timeout: float = 20.0, daemon: Daemon | None = None
) -> float:
    """Poll `check` (sync or async) until truthy; seconds waited. Fails naming `what`."""
    start = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - start < timeout:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return time.monotonic() - start
        except (dns.exception.DNSException, OSError) as exc:
            last = exc
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"{daemon.name} exited while waiting for {what}:\n{daemon.log()}")
        await asyncio.sleep(0.02)
    log = daemon.log()[-3000:] if daemon else ""
    raise AssertionError(f"timed out waiting for {what} (last error: {last})\n{log}")


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in msg.answer for rd in rrset if hasattr(rd, "address"))


def blocked_v4(msg: dns.message.Message) -> bool:
    return msg.rcode() == 0 and addresses(msg) == [STOP_V4]


def dns_port() -> int:
    """A loopback port free for both UDP and TCP (daemons bind both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


# ------------------------------------------------------------------ Unbound


def unbound_config(
    workdir: Path,
    port: int,
    upstream: int,
    threads: int = 1,
    server_extra: str = "",
    modules: str = "python validator iterator",
    tail: str = "",
    control: bool = False,
) -> Path:
    conf = workdir / "unbound.conf"
    conf.write_text(
        f"""server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: {threads}
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "{modules}"
    ede: yes
    so-reuseport: yes
    local-zone: "test." nodefault
{server_extra}python:
    python-script: "{UNBOUND_PLUGIN}"
remote-control:
    control-enable: {"yes" if control else "no"}
    control-interface: "{workdir / "unbound.ctl"}"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream}
{tail}"""
    )
    return conf


def settings_values(index: Path, **extra: object) -> dict[str, object]:
    """The plugin settings of the tests (both plugin families take the same keys)."""
    return {
        "index": str(index),
        "ipv4": [STOP_V4],
        "ipv6": [STOP_V6],
        "ttl": 60,
        "reload_interval": 0.2,
        **extra,
    }


def plugin_settings(workdir: Path, index: Path, **extra: object) -> Path:
    path = workdir / "cordon.toml"
    values = settings_values(index, **extra)
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_unbound(
    workdir: Path,
    upstream: int,
    state_dir: Path,
    server_extra: str = "",
    control: bool = False,
    **extra: object,
) -> Daemon:
    port = dns_port()
    conf = unbound_config(workdir, port, upstream, server_extra=server_extra, control=control)
    settings = plugin_settings(workdir, state_dir / INDEX_FILE, **extra)
    if not (Path(UNBOUND_PYTHONPATH) / "unboundmodule.py").exists():
        raise AssertionError("Unbound's python module needs the Debian package python3-unbound")
    daemon = Daemon(
        "unbound",
        [tools.path("unbound"), "-d", "-c", str(conf)],
        port,
        workdir,
        {"CORDON_UNBOUND_CONFIG": str(settings), "PYTHONPATH": UNBOUND_PYTHONPATH},
    ).start()
    await wait_for(lambda: _answers(port), "unbound to answer", daemon=daemon)
    return daemon


async def _answers(port: int) -> bool:
    msg = await ask(port, "allowed.test", timeout=0.5)
    return msg.rcode() == 0


def malformed_queries(count: int, seed: int = 13) -> list[bytes]:
    """Truncated headers, bad label lengths, compression loops, junk counts, random bytes."""
    rnd = random.Random(seed)
    good = dns.message.make_query("www.listed.test", "A").to_wire()
    out = []
    for i in range(count):
        kind = i % 6
        if kind == 0:
            out.append(rnd.randbytes(rnd.randrange(0, 12)))
        elif kind == 1:
            out.append(good[:12] + bytes([rnd.randrange(64, 256)]) + rnd.randbytes(20))
        elif kind == 2:
            out.append(good[:12] + b"\xc0\x0c\x00\x01\x00\x01")  # pointer to itself
        elif kind == 3:
            head = bytearray(good[:12])
            head[4:12] = rnd.randbytes(8)
            out.append(bytes(head) + good[12:])
        elif kind == 4:
            out.append(good[: rnd.randrange(13, len(good))])
        else:
            out.append(rnd.randbytes(rnd.randrange(12, 600)))
    return out


def blast(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        for d in datagrams:
            with contextlib.suppress(OSError):
                s.send(d)


# ------------------------------------------------------------------ Lua plugins (PowerDNS, dnsdist)


def lua_settings(workdir: Path, index: Path, **extra: object) -> Path:
    values = settings_values(index, **extra)

    def lua(v: object) -> str:
        if isinstance(v, list):
            return "{" + ", ".join(lua(x) for x in v) + "}"
        return json.dumps(v)

    path = workdir / "plugin-settings.lua"
    path.write_text(
        "return {\n" + "".join(f"  {k} = {lua(v)},\n" for k, v in values.items()) + "}\n"
    )
    return path


def recursor_argv(
    workdir: Path,
    port: int,
    upstream: int,
    packetcache_ttl: int = 3,
    plugin: bool = True,
    extra: tuple[str, ...] = (),
) -> list[str]:
    (workdir / "recursor.conf").write_text("")
    script = [f"--lua-dns-script={LUA_DIR / 'recursor.lua'}"] if plugin else []
    return [
        tools.path("pdns_recursor"),
        f"--config-dir={workdir}",
        f"--socket-dir={workdir}",
        "--daemon=no",
        "--write-pid=no",
        "--disable-syslog=yes",
        "--log-timestamp=no",
        "--local-address=127.0.0.1",
        f"--local-port={port}",
        f"--forward-zones-recurse=.=127.0.0.1:{upstream}",
        "--dont-query=",
        "--allow-from=127.0.0.0/8",
        "--threads=1",
        "--dnssec=off",
        f"--packetcache-ttl={packetcache_ttl}",
        *script,
        *extra,
        "--loglevel=5",
        "--security-poll-suffix=",  # no secpoll query, and
        "--hint-file=no",  # no root priming: nothing leaves loopback
    ]


async def start_recursor(
    workdir: Path, upstream: int, state_dir: Path, packetcache_ttl: int = 3, **extra: object
) -> Daemon:
    port = dns_port()
    settings = lua_settings(workdir, state_dir / INDEX_FILE, **extra)
    daemon = Daemon(
        "recursor",
        recursor_argv(workdir, port, upstream, packetcache_ttl),
        port,
        workdir,
        {"CORDON_LUA_SETTINGS": str(settings), "CORDON_LUA_DIR": str(LUA_DIR)},
    ).start()
    await wait_for(lambda: _answers(port), "pdns_recursor to answer", daemon=daemon)
    return daemon


def dnsdist_config(workdir: Path, port: int, upstream: int, plugin: bool = True) -> Path:
    conf = workdir / "dnsdist.conf"
    text = f"""setSecurityPollSuffix("")
setLocal("127.0.0.1:{port}")
setACL({{"127.0.0.0/8"}})
newServer({{address="127.0.0.1:{upstream}", checkInterval=3600}})
"""
    if plugin:
        text += f"""dofile("{LUA_DIR / "dnsdist.lua"}")
addAction(AllRule(), LuaFFIAction(cordon_query))
addResponseAction(AllRule(), LuaFFIResponseAction(cordon_response))
"""
    conf.write_text(text)
    return conf


async def start_dnsdist(workdir: Path, upstream: int, state_dir: Path, **extra: object) -> Daemon:
    port = dns_port()
    settings = lua_settings(workdir, state_dir / INDEX_FILE, **extra)
    conf = dnsdist_config(workdir, port, upstream)
    daemon = Daemon(
        "dnsdist",
        [
            tools.path("dnsdist"),
            "--supervised",
            "--disable-syslog",
            "-C",
            str(conf),
        ],
        port,
        workdir,
        {"CORDON_LUA_SETTINGS": str(settings)},
    ).start()
    await wait_for(lambda: _answers(port), "dnsdist to answer", daemon=daemon)
    return daemon
