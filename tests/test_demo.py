"""`make demo` as a user runs it: the whole chain on loopback, then Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")


def dig(port: int, name: str, qtype: str = "A") -> str:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), name, qtype, "+time=2", "+tries=1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return out.stdout


def answers(port: int, name: str) -> list[str]:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), name, "A", "+short", "+time=2", "+tries=1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return out.stdout.split()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORDON_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blocklist.demo",
            "--dir",
            str(state),
            "--authority-port",
            "0",
            "--resolver-port",
            "0",
            "--stoppage-port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
        info = json.loads((state / "demo.json").read_text())
        ports = info["ports"]
        text = "".join(output)
        assert f"dig @127.0.0.1 -p {ports['resolver']} blocked-demo.test A" in text

        # The dig the README promises: the stop page's address and the EDE.
        blocked = dig(ports["resolver"], "blocked-demo.test")
        assert "127.0.0.1" in blocked and "EDE: 16 (Censored)" in blocked, blocked
        assert "EDE: 4 (Forged Answer)" in blocked
        assert answers(ports["resolver"], "www.another-demo.test") == ["127.0.0.1"]
        assert answers(ports["resolver"], "allowed.example") == ["192.0.2.1"]

        # The curl the README promises: 451 and the page.
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['stoppage']}/", headers={"Host": "blocked-demo.test"}
        )
        with pytest.raises(urllib.error.HTTPError) as page:
            urllib.request.urlopen(request, timeout=10)
        assert page.value.code == 451
        assert b"blocked-demo.test" in page.value.read()

        # Add a name, approve it, and see it blocked within seconds.
        cli_env = {**env, "CORDON_URL": f"http://127.0.0.1:{ports['authority']}"}

        def blocklist(token: str, *args: str) -> dict:
            out = subprocess.run(
                [sys.executable, "-m", "blocklist.cli", "--json", *args],
                env={**cli_env, "CORDON_TOKEN_FILE": str(state / f"{token}.token")},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        assert answers(ports["resolver"], "new-demo.test") == ["192.0.2.1"]
        added = blocklist(
            "demo-officer", "add", "new-demo.test", "--country", "NL", "--evidence", "DEMO-2"
        )
        blocklist("demo-approver", "approve", str(added["id"]))
        for _ in range(60):
            if answers(ports["resolver"], "new-demo.test") == ["127.0.0.1"]:
                break
            time.sleep(0.5)
        assert answers(ports["resolver"], "new-demo.test") == ["127.0.0.1"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, "".join(output)
    pids = json.loads((state / "demo.json").read_text())["pids"]
    time.sleep(0.5)
    assert [name for name, pid in pids.items() if alive(pid)] == []
