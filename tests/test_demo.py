"""`make demo` as a newcomer meets it: every command it prints runs as printed, in a shell, and
does what its comment says; a normal start logs no warning or error; the README shows the same
commands."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocklist.demo import ORIGIN_PAGE, pick_port, port_free

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.tools("dig", "curl", "kdig")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def section(text: str, title: str) -> list[str]:
    """The command lines printed under `title`, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line.strip())
    return out


def shell(script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    # A login-like environment: no CORDON_* from the test run, PATH as the user has it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORDON_")}
    return subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


def until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@contextlib.contextmanager
def running_demo(state: Path, cwd: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORDON_")}
    argv = [sys.executable, "-m", "blocklist.demo", "--dir", str(state)]
    for name in ("authority", "resolver", "stoppage", "urlproxy", "dot", "doh"):
        argv += [f"--{name}-port", "0"]  # any free port: the machine is shared
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail("demo exited early:\n" + "".join(output))
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        else:
            pytest.fail("demo did not become ready:\n" + "".join(output))
        yield proc, output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
            output.append(rest)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_every_printed_command_works_as_printed(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    with running_demo(state, tmp_path) as (proc, output):
        text = "".join(output)
        ports = json.loads((state / "demo.json").read_text())["ports"]
        try_these = section(text, "Try, in another terminal:")
        urls = section(text, "A URL entry on a shared host")
        encrypted = section(text, "Encrypted DNS")
        block = section(text, "Block a new name")
        unblock = section(text, "Unblock it again")
        assert len(try_these) == 5 and len(urls) == 3 and len(block) == 4 and len(unblock) == 3, (
            text
        )
        assert len(encrypted) == 3, text

        # What to try: each line in its own shell, checked against its own comment.
        dig_a, dig_aaaa, dig_allowed, curl_page, curl_form = try_these
        out = shell(dig_a).stdout
        assert (
            "127.0.0.1" in out and "EDE: 16 (Censored)" in out and "EDE: 4 (Forged Answer)" in out
        )
        assert re.search(r"blocked-demo\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1", out), out
        out = shell(dig_aaaa).stdout
        assert re.search(r"www\.another-demo\.test\.\s+\d+\s+IN\s+AAAA\s+::1", out), out
        out = shell(dig_allowed).stdout
        assert re.search(r"allowed\.example\.\s+\d+\s+IN\s+A\s+192\.0\.2\.1", out), out
        page = shell(curl_page)
        assert page.returncode == 0 and page.stdout.startswith("HTTP/1.1 451"), page.stdout[:300]
        assert "blocked-demo.test" in page.stdout and "/complaint" in page.stdout
        form = shell(curl_form)
        assert form.returncode == 0, form.stderr
        assert re.search(r'<form method="post" action="/complaint', form.stdout), form.stdout[:500]
        heading = re.search(r"<h1>(.*?)</h1>", form.stdout, re.S)
        assert heading and "blocked-demo.test" in heading.group(1)  # the form names the host
        assert 'name="token"' in form.stdout

        # A URL entry: the shared host goes to the URL proxy, which blocks only the listed path.
        dig_shared, curl_listed, curl_allowed = urls
        out = shell(dig_shared).stdout
        assert re.search(r"shared-host\.example\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1", out), out
        listed = shell(curl_listed)
        assert listed.returncode == 0 and listed.stdout.startswith("HTTP/1.1 451"), listed.stdout
        assert "/complaint?path=" in listed.stdout
        allowed = shell(curl_allowed)
        assert allowed.returncode == 0 and allowed.stdout == ORIGIN_PAGE, allowed.stdout

        # Encrypted DNS with the demo's certificate, and the browser canary.
        kdig_tls, kdig_https, dig_canary = encrypted
        out = shell(kdig_tls).stdout
        assert "TLS session" in out and "Censored" in out, out
        assert re.search(r"blocked-demo\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1", out), out
        out = shell(kdig_https).stdout
        assert "HTTP session (HTTP/2" in out, out
        assert re.search(r"allowed\.example\.\s+\d+\s+IN\s+A\s+192\.0\.2\.1", out), out
        assert "status: NXDOMAIN" in shell(dig_canary).stdout
        verified = kdig_tls.split("   ")[0] + (
            f" +tls-ca={state}/tls/dns.demo.test.crt +tls-hostname=dns.demo.test"
        )
        assert f"+tls-ca={state}/tls/dns.demo.test.crt +tls-hostname=dns.demo.test" in text
        assert "127.0.0.1" in shell(verified).stdout

        # Block a new name: the export, add and approve lines in one shell, as a user types them.
        *steps, dig_new = block
        assert "blocklist" in steps[1] and "blocklist" in steps[2]
        assert shell(dig_new).stdout.count("192.0.2.1") >= 1  # not blocked before
        done = shell("set -e\n" + "\n".join(steps))
        assert done.returncode == 0, done.stdout + done.stderr
        added, approved = done.stdout.splitlines()
        assert added.startswith("Entry ") and "added: domain new-demo.test" in added
        entry_id = added.split()[1]
        assert f"approve {entry_id} " in steps[2]  # the printed id is the one add gave
        assert approved.startswith(f"Entry {entry_id} approved: new-demo.test")
        until(lambda: "IN\tA\t127.0.0.1" in shell(dig_new).stdout, "new-demo.test blocked")

        # Unblock it: in the same terminal (after the export line), one officer asks — the name
        # stays blocked — and the approver confirms; then the name resolves normally again.
        request, confirm, dig_again = unblock
        assert f"delist {entry_id} " in request and f"delist confirm {entry_id}" in confirm
        asked = shell("set -e\n" + "\n".join([steps[0], request]))
        assert asked.returncode == 0, asked.stdout + asked.stderr
        assert asked.stdout.startswith(f"Delisting of entry {entry_id} requested: new-demo.test")
        publish = shell("\n".join([steps[0], steps[1].split(" add ")[0] + " publish"]))
        assert publish.returncode == 0, publish.stderr  # nothing to publish, or a new serial
        assert "IN\tA\t127.0.0.1" in shell(dig_again).stdout  # a request alone unblocks nothing
        done = shell("set -e\n" + "\n".join([steps[0], confirm]))
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"Entry {entry_id} delisted: new-demo.test")
        until(lambda: "192.0.2.1" in shell(dig_again).stdout, "new-demo.test unblocked")

        # A normal start says nothing at warning or error level, in the demo's output or in
        # any component's log.
        noisy = [
            f"{log.name}: {line}"
            for log in sorted((state / "logs").glob("*.log"))
            for line in log.read_text().splitlines()
            if not line.startswith("{") or json.loads(line).get("level") != "info"
        ]
        assert noisy == []
        assert not re.search(r"(?i)\b(warning|error)\b", text), text
        pids = json.loads((state / "demo.json").read_text())["pids"]
        assert ports["authority"] and ports["resolver"] and ports["stoppage"]
    assert proc.returncode == 0, "".join(output)
    assert "".join(output).endswith(f"Stopped. State kept in {state}\n")
    until(lambda: not any(alive(pid) for pid in pids.values()), "the components to stop", 20)


def test_readme_shows_what_the_demo_prints(tmp_path: Path) -> None:
    """The quick start in README.md holds the demo's commands for a clone in ~/cordon with the
    default ports."""
    from blocklist.demo import Demo

    ports = {
        "authority": 8440,
        "resolver": 5353,
        "stoppage": 8080,
        "urlproxy": 8081,
        "dot": 8853,
        "doh": 8443,
    }
    demo = Demo(tmp_path / "demo-state", ports, None)
    demo.next_id = 4
    readme = (REPO / "README.md").read_text()
    bin_dir = str(Path(sys.executable).parent)
    for command in [c for part in demo.commands() for c in part]:
        shown = command.replace(str(tmp_path), "~/cordon").replace(bin_dir, "~/cordon/.venv/bin")
        assert f"  {shown}\n" in readme, shown


def test_default_ports_survive_a_restart_and_a_taken_port_is_announced(capsys) -> None:
    # A port whose last connection is in TIME_WAIT (a demo stopped a moment ago) is free for
    # our servers: first prove the TIME_WAIT is there (a plain bind fails), then probe.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    assert port_free(port)
    assert pick_port("resolver", port, set()) == port
    assert capsys.readouterr().out == ""
    # A listening port is taken: another one is used, and the change is said.
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        assert not port_free(taken)
        other = pick_port("stop page", taken, set())
    assert other != taken
    assert (
        capsys.readouterr().out == f"Port {taken} (stop page) is in use: using {other} instead.\n"
    )


def test_stoppage_demo_removes_its_temporary_directory(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stoppage", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("DEMO stop page") and str(tmp_path) in first
        assert len(list(tmp_path.iterdir())) == 1  # the demo's directory exists while it runs
        curl = f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: blocked-demo.test' http://127.0.0.1:{port}/"
        until(lambda: shell(curl).stdout == "451", "the demo stop page")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert list(tmp_path.iterdir()) == []
