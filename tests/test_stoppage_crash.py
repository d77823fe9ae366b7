"""SIGKILL of a real `stoppage serve` process during a burst of complaints.

Every complaint that got a ticket must reach the authority exactly once: the outbox commits
before the person sees "received", and delivery retries with the row's idempotency key after a
crash at any point — mid-request, mid-delivery, or between the authority's answer and our commit
(the named crash point `stoppage/forward-answered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import crashing
import pytest
from authority_fixtures import RunningAuthority, start_authority
from test_stoppage_support import HOST, ticket_and_secret, wait_for, write_list

from blocklist.state import Kind

ROOT_DIR = Path(__file__).resolve().parent.parent
BURST = 60
KILL_AFTER = 12  # tickets shown (with some complaints at the authority) before the kill
KILL_BY = 24  # tickets shown: kill now, whatever the forwarder has done

CONFIG = """\
[sync]
root_keys = ["{root}"]
state_dir = "sync-state"
authority_url = "{url}"
token = "{token}"

[authority]
website = "https://authority.example/"
legal_basis = "Test Act, article 1."

[page]
hotline = {{ name = "Hotline", url = "https://hotline.example/" }}
confidential_help = [{{ name = "Help", url = "https://help.example/" }}]

[server]
listen = ["127.0.0.1"]
port = 0
list_poll_interval = 0.2

[complaints]
state_dir = "stoppage-state"
min_fill_seconds = 0
retry_initial_seconds = 0.1
retry_max_seconds = 0.5
decision_poll_seconds = 1

[limits]
per_client_per_hour = 10000
per_entry_per_hour = 10000
total_per_hour = 10000

[metrics]
enabled = false
"""


@pytest.fixture
async def api(tmp_path: Path):
    running_authority = await start_authority(tmp_path / "authority")
    yield running_authority
    await running_authority.client.close()


class Process:
    """`python -m stoppage serve` as a child; its JSON log on stderr tells the port."""

    def __init__(self, config: Path, crash_at: str | None = None) -> None:
        self.config = config
        self.crash_at = crash_at
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.lines: list[dict] = []
        self._ready = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def start(self) -> Process:
        args = ("stoppage", "serve", "--config", str(self.config))
        argv = (
            crashing.argv(self.crash_at, *args) if self.crash_at else [sys.executable, "-m", *args]
        )
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT_DIR,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), timeout=30)
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"message": raw.decode(errors="replace").rstrip()}
            self.lines.append(line)
            if line.get("message") == "stop page listening":
                self.port = int(line["port"])
                self._ready.set()
        self._ready.set()  # exited: let start() see it

    async def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        await self.wait()

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout=timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.wait()


async def complain(
    session: aiohttp.ClientSession, port: int, reason: str, delay: float = 0
) -> tuple[str, str]:
    """GET the form for its token, POST a complaint; the ticket, or an exception."""
    await asyncio.sleep(delay)
    url = f"http://127.0.0.1:{port}/complaint?lang=en"
    headers = {"Host": HOST}
    async with session.get(url, headers=headers) as resp:
        form = await resp.text()
    token = html.unescape(re.search(r'name="token" value="([^"]+)"', form).group(1))
    data = {"token": token, "role": "visitor", "reason": reason, "language": "en"}
    async with session.post(url, data=data, headers=headers) as resp:
        body = await resp.text()
        assert resp.status == 200, body
    return ticket_and_secret(body)


async def filed(api: RunningAuthority) -> list[dict]:
    status, body = await api.call("olga", "GET", "/v1/complaints?limit=10000")
    assert status == 200, body
    return body["complaints"]


def outbox(path: Path) -> list[dict]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM complaints")]
    finally:
        con.close()


async def test_sigkill_during_a_burst_loses_and_doubles_nothing(
    api: RunningAuthority, tmp_path: Path
) -> None:
    status, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": HOST, "hosting_country": "NL", "evidence": "E"}
    )
    assert status in (200, 201), body
    entry_id = body["id"]
    root = write_list(tmp_path, [(HOST, entry_id, Kind.DOMAIN)])
    config = tmp_path / "stoppage.toml"
    url = str(api.client.make_url("")).rstrip("/")
    config.write_text(CONFIG.format(root=root, url=url, token=api.tokens["isp"]))
    outbox_path = tmp_path / "stoppage-state" / "outbox.db"
    ticketed: dict[str, str] = {}  # reason -> ticket

    # Phase 1: a burst of concurrent complaints; SIGKILL once some have their tickets.
    proc = await Process(config).start()
    try:
        async with aiohttp.ClientSession() as session:
            # A burst spread over about a second, so requests and deliveries overlap the kill.
            tasks = {
                asyncio.create_task(
                    complain(session, proc.port, f"burst complaint {i}", delay=i * 0.03)
                ): i
                for i in range(BURST)
            }
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task.exception() is None:
                        ticketed[f"burst complaint {tasks[task]}"] = task.result()[0]
                if len(ticketed) >= KILL_BY:
                    break
                if len(ticketed) >= KILL_AFTER and len(await filed(api)) >= 3:
                    break
            await proc.kill()
            done, _ = await asyncio.wait(pending) if pending else (set(), set())
            for task in done:
                if task.exception() is None:  # answered just before the kill
                    ticketed[f"burst complaint {tasks[task]}"] = task.result()[0]
    finally:
        await proc.stop()
    assert proc.proc.returncode == -signal.SIGKILL
    assert KILL_AFTER <= len(ticketed) < BURST, len(ticketed)
    rows = outbox(outbox_path)
    stored = {r["ticket"] for r in rows}
    assert set(ticketed.values()) <= stored  # every ticket shown was committed first
    waiting = sum(r["state"] == "pending" for r in rows)
    at_authority = len(await filed(api))
    print(
        f"killed: {len(ticketed)} tickets shown, {len(rows)} stored, {at_authority} at the "
        f"authority, {waiting} not marked as sent"
    )

    # Phase 2: restart with a crash point between the authority's answer and our commit. The
    # first delivery (a row left by phase 1, or this new complaint) kills the process there.
    proc = await Process(config, crash_at="stoppage/forward-answered").start()
    try:
        async with aiohttp.ClientSession() as session:
            with contextlib.suppress(aiohttp.ClientError, AssertionError, AttributeError):
                ticket, _ = await complain(session, proc.port, "after the first crash")
                ticketed["after the first crash"] = ticket
        assert await proc.wait() == -signal.SIGKILL  # it killed itself at the crash point
    finally:
        await proc.stop()

    # Phase 3: a normal restart drains the outbox.
    proc = await Process(config).start()
    try:
        await wait_for(
            lambda: all(r["state"] == "forwarded" for r in outbox(outbox_path)), timeout=30
        )
    finally:
        await proc.stop()
    assert proc.proc.returncode == 0  # SIGTERM: a clean stop

    rows = outbox(outbox_path)
    complaints = await filed(api)
    reasons = [c["reason"] for c in complaints]
    for reason in ticketed:
        assert reasons.count(reason) == 1, reason  # every ticketed complaint, exactly once
    assert len(reasons) == len(set(reasons)) == len(rows)  # nothing doubled, nothing extra
    assert {r["complaint_id"] for r in rows} == {c["complaint_id"] for c in complaints}
    assert all(c["entry_id"] == entry_id and c["host"] == HOST for c in complaints)
