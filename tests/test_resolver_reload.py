"""Reload on SIGHUP: the real `resolver serve` re-reads its file and replaces its service (one
process) or its workers (one by one) while clients keep asking: no query fails. An invalid file
keeps the running configuration and the log says why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.exception
import pytest
from resolver_fixtures import ROOT_PUB, FakeUpstream, addresses, ask, ask_tcp, write_list
from test_resolver_service import free_dns_port

REPO = Path(__file__).resolve().parent.parent
OLD_STOP, NEW_STOP = "192.0.2.80", "192.0.2.81"
ADDR = "198.51.100.7"


def write_config(
    path: Path, state_dir: Path, port: int, metrics: int, up: int, stop: str, workers: int
) -> None:
    path.write_text(
        f"""
[sync]
root_keys = ["{ROOT_PUB}"]
state_dir = "{state_dir}"

[server]
listen = ["127.0.0.1"]
port = {port}
workers = {workers}
list_poll_interval = 0.1

[upstream]
servers = ["127.0.0.1:{up}"]
timeout = 0.5

[blocking]
ipv4 = "{stop}"

[metrics]
port = {metrics}
"""
    )


class Log:
    """The server's stderr, read line by line in the background."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.proc = proc
        self.task = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line)

    async def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            assert self.proc.poll() is None, "".join(self.lines)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} not logged:\n{''.join(self.lines)}")


class Load:
    """Clients asking without pause (UDP and TCP, listed and forwarded names); every answer is
    checked and every failure (no answer in 3 s, wrong answer) counted."""

    def __init__(self, port: int, clients: int = 4, tcp_retries: int = 0) -> None:
        self.port = port
        self.tcp_retries = tcp_retries
        self.retried = 0
        self.stops: set[str] = set()
        self.answered = 0
        self.failures: list[str] = []
        self.running = True
        self.tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, i: int) -> None:
        n = 0
        while self.running:
            n += 1
            tcp = (i + n) % 7 == 0
            name = "www.blocked.example" if n % 2 else "fine.example"
            resp = None
            for attempt in range(1 + (self.tcp_retries if tcp else 0)):
                try:
                    resp = await (ask_tcp if tcp else ask)(self.port, name)
                    break
                except (dns.exception.Timeout, OSError, EOFError) as exc:
                    if attempt < self.tcp_retries and tcp and isinstance(exc, (OSError, EOFError)):
                        self.retried += 1  # a reset connection: a stub resolver asks again
                        continue
                    self.failures.append(f"{name} {'tcp' if tcp else 'udp'}: {exc!r}")
            if resp is None:
                continue
            got = addresses(resp)
            if name == "fine.example":
                if got != [ADDR]:
                    self.failures.append(f"{name}: {resp}")
            elif len(got) == 1 and got[0] in (OLD_STOP, NEW_STOP):
                self.stops.add(got[0])
            else:
                self.failures.append(f"{name}: {resp}")
            self.answered += 1

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reloads_under_load_without_a_failed_query(tmp_path, workers):
    up = await FakeUpstream().start()
    up.add("fine.example", "A", ADDR)
    write_list(tmp_path, ["blocked.example"])
    port, metrics = free_dns_port(), free_dns_port()
    conf = tmp_path / "resolver.toml"
    write_config(conf, tmp_path, port, metrics, up.port, OLD_STOP, workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORDON_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "resolver.cli", "serve", "--config", str(conf)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = Log(proc)
    load = None
    try:
        await log.wait_for("answering DNS on" if workers == 1 else "workers answering DNS")
        # Several workers: a TCP connection still waiting in the accept queue of a worker that
        # is replaced is reset by the kernel (unless net.ipv4.tcp_migrate_req = 1); a stub
        # resolver asks again. One process hands its listening socket over: nothing is reset.
        load = Load(port, tcp_retries=0 if workers == 1 else 1)
        await until(lambda: load.answered > 100, 30, "load")
        # A valid change: the stop page moves. Clients see the new address, none fails.
        write_config(conf, tmp_path, port, metrics, up.port, NEW_STOP, workers)
        proc.send_signal(signal.SIGHUP)
        try:
            await until(lambda: NEW_STOP in load.stops, 60, "answers with the new stop address")
        except AssertionError:
            raise AssertionError("".join(log.lines)[-3000:]) from None
        await log.wait_for("configuration reloaded")
        before = load.answered
        await until(lambda: load.answered > before + 200, 30, "more answers after the reload")
        assert load.failures == [], load.failures[:5]
        assert load.stops == {OLD_STOP, NEW_STOP}

        # An invalid file: refused with the reason, the running configuration stays.
        conf.write_text(conf.read_text().replace(f'ipv4 = "{NEW_STOP}"', 'ipv4 = "not-an-ip"'))
        proc.send_signal(signal.SIGHUP)
        line = await log.wait_for("reload refused")
        assert "keeping the running configuration" in line and "blocking.ipv4" in line
        assert str(conf) in line
        # So does a change that needs a restart.
        write_config(conf, tmp_path, port, metrics, up.port, NEW_STOP, workers + 1)
        proc.send_signal(signal.SIGHUP)
        line = await log.wait_for("server.workers changed")
        before = load.answered
        await until(lambda: load.answered > before + 100, 30, "answers after refused reloads")
        await load.stop()
        assert load.failures == [], load.failures[:5]
        resp = await ask(port, "www.blocked.example")
        assert addresses(resp) == [NEW_STOP]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if load is not None and load.running:
            await load.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(Exception):
            await log.task
        await up.stop()
