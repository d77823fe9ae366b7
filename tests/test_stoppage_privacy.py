"""No visitor data in any log of a real `stoppage serve` process, whatever it is sent.

Each request comes from a distinctive loopback source address (127.0.0.77) and carries a marker
in its host, path, query and header values. The process's whole output (stdout and stderr) is
then searched for the address and the marker. A positive control proves the attacks did reach
a library logger (aiohttp's server logger reports malformed requests): its record is there, with
the message withheld.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_stoppage_crash import CONFIG
from test_stoppage_support import HOST, write_list

ROOT_DIR = Path(__file__).resolve().parent.parent
CLIENT = "127.0.0.77"
MARK = "zq7visitor"


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("message") == text:
                return line
        if proc.poll() is not None:
            raise AssertionError(f"stoppage exited ({proc.returncode}): {path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} line within {timeout} s")


def _send(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes from CLIENT; return whatever the server answers before closing."""
    with socket.socket() as s:
        s.bind((CLIENT, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early on garbage: that is an answer too
        out = b""
        try:
            while len(out) < 1_000_000:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def attacks() -> dict[str, bytes]:
    m = MARK
    big = "x" * 20_000
    tls_hello = (
        bytes.fromhex("160301") + (200).to_bytes(2, "big") + b"\x01\x00\x00\xc4\x03\x03"
        + os.urandom(32) + b"\x00\x00\x02\x13\x01\x01\x00"
        + b"\x00\x00" + f"\x00\x12\x00\x10\x00\x00\x0d{m}.test".encode()
    )  # fmt: skip
    return {
        "normal request": _get(
            f"/{m}/path?{m}=q",
            f"Host: {m}.{HOST}",
            f"User-Agent: {m}-browser",
            f"Cookie: session={m}",
            f"Referer: http://{m}.example/",
            f"X-Forwarded-For: 198.51.100.{7}, {m}",
        ),
        "over-long URL": _get(f"/{m}/{big}?{m}=1", f"Host: {HOST}"),
        "over-long header": _get("/", f"Host: {HOST}", f"Cookie: {m}={big}"),
        "8 KB of cookies in many headers": _get(
            "/", f"Host: {HOST}", *[f"Cookie: c{i}={m}{'y' * 1000}" for i in range(12)]
        ),
        "duplicate Host": _get("/", f"Host: {m}.one.test", f"Host: {m}.two.test"),
        "duplicate Content-Length": (
            f"POST /complaint HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n"
            f"Content-Length: 7\r\nX-Note: {m}\r\n\r\n{m}"
        ).encode(),
        "bad request line": f"GET /{m} HTTP/9.{m}\r\nHost: {HOST}\r\n\r\n".encode(),
        "junk method": f"{m.upper()}\x01 / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        "header without colon": f"GET / HTTP/1.1\r\nHost: {HOST}\r\n{m} no colon\r\n\r\n".encode(),
        "control byte in a header": _get("/", f"Host: {HOST}", f"X-A: {m}\x00"),
        "non-UTF-8 path": b"GET /\xff\xfe" + m.encode() + b" HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "bad chunked body": (
            f"POST /complaint HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n\r\nzz{m}\r\n"
        ).encode(),
        "truncated body": (
            f"POST /complaint?{m}=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 500\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n\r\nreason={m}"
        ).encode(),
        "too many headers": _get("/", f"Host: {HOST}", *[f"X-{i}: {m}" for i in range(200)]),
        "TLS ClientHello on the HTTP port": tls_hello,
        "binary garbage": os.urandom(512) + m.encode() + os.urandom(512),
    }


@pytest.fixture
def server(tmp_path: Path):
    root = write_list(tmp_path)
    config = tmp_path / "stoppage.toml"
    config.write_text(CONFIG.format(root=root, url="http://127.0.0.1:9", token="not-a-real-token"))
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stoppage", "serve", "--config", str(config)],
            cwd=ROOT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        port = int(_wait_for_line(err, "stop page listening", proc)["port"])
        yield proc, port, out, err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_no_visitor_data_in_any_log_for_any_input(server) -> None:
    proc, port, out, err = server
    answers = {}
    for name, data in attacks().items():
        answers[name] = _send(port, data, half_close=name == "truncated body")
    # The server answered the well-formed request, and refused the malformed ones.
    assert answers["normal request"].startswith(b"HTTP/1.1 451")  # a subdomain of a listed one
    assert answers["over-long URL"].split(b" ", 2)[1].startswith(b"4")
    assert answers["over-long header"].split(b" ", 2)[1].startswith(b"4")
    # Still serving after all of it.
    assert _send(port, _get("/", f"Host: {HOST}")).startswith(b"HTTP/1.1 451")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    logged = out.read_text(errors="replace") + err.read_text(errors="replace")
    lines = [json.loads(raw) for raw in err.read_text().splitlines() if raw.startswith("{")]
    # Positive controls: logging works, and a library did report the bad requests.
    assert any(line.get("message") == "stopping" for line in lines)
    withheld = [line for line in lines if line["message"].startswith("message withheld")]
    assert withheld and {line["logger"] for line in withheld} <= {
        "aiohttp.server",
        "aiohttp.web",
        "aiohttp.internal",
        "asyncio",
        "py.warnings",
    }
    for secret in [CLIENT, MARK, MARK.upper(), "198.51.100.7", "x" * 100]:
        assert secret not in logged, secret


def test_filter_keeps_own_records_and_strips_others() -> None:
    import logging

    from stoppage.privacy import WITHHELD, VisitorDataFilter

    keep = VisitorDataFilter()
    own = logging.LogRecord("cordon.stoppage", logging.INFO, __file__, 1, "list in force", (), None)
    assert keep.filter(own) and own.getMessage() == "list in force"
    try:
        raise ValueError(f"bad request from {CLIENT}: GET /{MARK}")
    except ValueError:
        exc_info = sys.exc_info()
    other = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling %s", (MARK,), exc_info
    )
    assert keep.filter(other)
    assert other.getMessage() == f"{WITHHELD} (ValueError)"
    assert other.exc_info is None and other.args is None
