"""Loopback test peers for the RPZ feed: signed plain lists on disk, a static upstream, and real
Unbound and BIND secondaries started from generated configs. Used by tests/test_rpz*.py and
bench/rpz.py; nothing here reaches beyond 127.0.0.0/8.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from blocklist.state import Entry, Kind, ListState
from blocklist.sync.local import LocalSigner
from blocklist.sync.verified import VerifiedList

NOW = int(time.time())
LOCAL = LocalSigner.generate(NOW)
ROOT_PUB = LOCAL.root_text
UPSTREAM_V4 = "192.0.2.1"  # what the static upstream answers for every name
STOP_V4 = "192.0.2.80"  # the stop page, for names under the stop host
STOP_HOST = "stop.isp.example."


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (racy, but fine on a test machine)."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def plain_state(domains: Iterable[str] = (), urls: Iterable[str] = (), first_id: int = 1):
    entries = []
    next_id = first_id
    for value in domains:
        entries.append(Entry.from_value(value, next_id, Kind.DOMAIN))
        next_id += 1
    for value in urls:
        entries.append(Entry.from_value(value, next_id, Kind.URL))
        next_id += 1
    return ListState.from_entries(entries, plain=True)


def write_list(
    state_dir: Path,
    domains: Iterable[str] = (),
    serial: int = 1,
    urls: Iterable[str] = (),
    edition: str = "plain",
    state: ListState | None = None,
) -> VerifiedList:
    """Persist a signed verified list exactly as `resolver sync` would."""
    if state is None:
        state = plain_state(domains, urls)
    return LOCAL.save(state_dir, state, serial=serial, now=NOW, edition=edition)


# ------------------------------------------------------------------------------ static upstream


class StaticUpstream:
    """A tiny authoritative-for-everything server the resolvers forward to: every A query gets
    UPSTREAM_V4 (STOP_V4 for the stop host), AAAA gets NODATA. UDP and TCP, in threads."""

    def __init__(self, ttl: int = 1) -> None:
        self.ttl = ttl
        self.port = free_port()
        self.queries = 0
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = outer.answer(data)
                if reply:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    while True:
                        head = self.rfile.read(2)
                        if len(head) < 2:
                            return
                        data = self.rfile.read(struct.unpack("!H", head)[0])
                        reply = outer.answer(data)
                        if reply:
                            self.wfile.write(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return

        class UdpServer(socketserver.ThreadingUDPServer):
            allow_reuse_address = True

        class TcpServer(socketserver.ThreadingTCPServer):
            allow_reuse_address = True

        self.udp = UdpServer(("127.0.0.1", self.port), Udp)
        self.tcp = TcpServer(("127.0.0.1", self.port), Tcp)
        self.udp.daemon_threads = self.tcp.daemon_threads = True
        self._threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in (self.udp, self.tcp)
        ]
        for t in self._threads:
            t.start()

    def answer(self, data: bytes) -> bytes | None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return None
        self.queries += 1
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        r.flags &= ~dns.flags.RA
        if q.question:
            name = q.question[0].name
            rdtype = q.question[0].rdtype
            if rdtype == dns.rdatatype.A:
                addr = STOP_V4 if name.to_text().lower() == STOP_HOST else UPSTREAM_V4
                r.answer.append(dns.rrset.from_text(name, self.ttl, "IN", "A", addr))
            else:
                r.set_rcode(dns.rcode.NOERROR)
        return r.to_wire()

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()


# ---------------------------------------------------------------------------------- resolvers


def have(binary: str) -> bool:
    return shutil.which(binary) is not None or Path(f"/usr/sbin/{binary}").exists()


def binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class Peer:
    """A resolver process acting as an RPZ secondary."""

    kind: str
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    log_path: Path = field(default_factory=Path)
    argv: list[str] = field(default_factory=list)

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log()}")
            if _answers(self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} did not start listening:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def _answers(port: int) -> bool:
    # Any answer will do (BIND rate-limits version.bind, so that is no probe).
    q = dns.message.make_query("cordon-probe.invalid.", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(q.to_wire(), ("127.0.0.1", port))
            s.recvfrom(4096)
            return True
        except OSError:
            return False


def unbound_peer(
    workdir: Path,
    zone: str,
    primary_port: int,
    upstream_port: int,
    *,
    outgoing: str = "127.0.0.1",
    port: int | None = None,
) -> Peer:
    """Unbound with the zone as an rpz: secondary of 127.0.0.1@primary_port (no TSIG: see
    docs/rpz.md), forwarding everything else to the static upstream."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "unbound.conf"
    conf.write_text(
        f"""server:
    directory: "{workdir}"
    chroot: ""
    username: ""
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    log-time-ascii: yes
    interface: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    outgoing-interface: {outgoing}
    module-config: "respip iterator"
    qname-minimisation: no
    infra-keep-probing: yes
    # Unbound answers the special-use name test. itself (RFC 6761) before RPZ is consulted.
    local-zone: "test." nodefault

remote-control:
    control-enable: no

forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream_port}

rpz:
    name: "{zone}"
    primary: 127.0.0.1@{primary_port}
    allow-notify: 127.0.0.1
    zonefile: "{workdir}/rpz.zone"
    for-downstream: yes
    rpz-log: yes
    rpz-log-name: "cordon"
"""
    )
    return Peer(
        "unbound",
        port,
        workdir,
        log_path=workdir / "unbound.log",
        argv=[binary("unbound"), "-d", "-c", str(conf)],
    )


def bind_peer(
    workdir: Path,
    zone: str,
    primary_port: int,
    upstream_port: int,
    *,
    key_name: str,
    secret_b64: str,
    algorithm: str = "hmac-sha256",
    port: int | None = None,
) -> Peer:
    """BIND (named) with the zone as a TSIG-signed secondary used as its response-policy zone,
    forwarding everything else to the static upstream (forward only: no root servers)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "named.conf"
    conf.write_text(
        f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    allow-recursion {{ 127.0.0.0/8; }};
    forwarders {{ 127.0.0.1 port {upstream_port}; }};
    forward only;
    dnssec-validation no;
    notify no;
    empty-zones-enable no;
    response-policy {{ zone "{zone}" min-update-interval 0; }} qname-wait-recurse no;
}};
controls {{ }};
key "{key_name}" {{ algorithm {algorithm}; secret "{secret_b64}"; }};
zone "{zone}" {{
    type secondary;
    primaries {{ 127.0.0.1 port {primary_port} key "{key_name}"; }};
    file "{workdir}/rpz.db";
    allow-notify {{ 127.0.0.1; }};
    allow-query {{ 127.0.0.0/8; }};
}};
"""
    )
    argv = [binary("named"), "-g", "-c", str(conf), "-n", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return Peer("bind", port, workdir, log_path=workdir / "named.log", argv=argv)


def dig(port: int, name: str, rdtype: str = "A", timeout: float = 2.0) -> list[str]:
    """`dig +short` against a loopback resolver: the answer lines (CNAME targets, addresses)."""
    out = subprocess.run(
        [
            binary("dig"),
            "@127.0.0.1",
            "-p",
            str(port),
            "+short",
            "+tries=1",
            f"+time={max(1, int(timeout))}",
            name,
            rdtype,
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def soa_serial(port: int, zone: str) -> int | None:
    lines = dig(port, zone, "SOA")
    for line in lines:
        parts = line.split()
        if len(parts) == 7 and parts[2].isdigit():
            return int(parts[2])
    return None


def blocked(answer: list[str], action_target: str = STOP_HOST) -> bool:
    """True when a `dig +short` answer shows the policy rewrite (CNAME to the stop host, or the
    stop page address)."""
    return bool(answer) and (answer[0] == action_target or answer[0] == STOP_V4)


def wait_for(check, timeout: float, interval: float = 0.05) -> float:
    """Poll `check()` until true; the seconds it took. Raises TimeoutError."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(interval)
