"""Operators' features of `resolver serve`: local exemptions, log-only mode, `resolver check` and
`resolver status` through the loopback control endpoint. Real sockets, dig, the real commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tools
from resolver_fixtures import (
    ROOT_PUB,
    STOP_V4,
    FakeUpstream,
    addresses,
    ask,
    ask_tcp,
    config_error,
    list_state,
    make_config,
    running,
    write_state,
)
from test_resolver_service import get

REPO = Path(__file__).resolve().parent.parent
# Entry ids follow the order of the names (first id 1).
LISTED = ["isp.example", "evil.mail.isp.example", "bad.example"]
ISP, EVIL_BELOW, BAD = 1, 2, 3
UPSTREAM_ADDR = "198.51.100.7"
NAMES = ["mail.isp.example", "x.mail.isp.example", "www.isp.example", "evil.mail.isp.example"]


async def upstream() -> FakeUpstream:
    up = await FakeUpstream().start()
    for name in [*NAMES, "bad.example", "www.bad.example", "fine.example"]:
        up.add(name, "A", UPSTREAM_ADDR)
    return up


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CORDON_")}
    out["PYTHONPATH"] = str(REPO)
    return out


async def cli(*args: str) -> tuple[int, str, str]:
    """Run `resolver ARGS` as a separate process (the loop keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolver.cli",
        *args,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def dig(port: int, name: str, transport: str = "udp") -> str:
    args = [tools.path("dig"), "-p", str(port), "@127.0.0.1", name, "A", "+tries=1", "+time=3"]
    if transport == "tcp":
        args.append("+tcp")
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode()


def write_toml(tmp_path: Path, service_port: int, metrics_port: int, extra: str = "") -> Path:
    path = tmp_path / "resolver.toml"
    path.write_text(
        f"""
[sync]
root_keys = ["{ROOT_PUB}"]
state_dir = "{tmp_path}"

[server]
listen = ["127.0.0.1"]
port = {service_port}

[upstream]
servers = ["127.0.0.1:9"]

[metrics]
port = {metrics_port}
{extra}
"""
    )
    return path


# ---------------------------------------------------------------------------------------------
# Local exemptions


@pytest.mark.tools("dig")
@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
async def test_exempted_name_resolves_and_the_entry_still_blocks_the_rest(tmp_path, fast_path):
    up = await upstream()
    write_state(tmp_path, list_state(LISTED), 7)
    config = make_config(
        tmp_path,
        [up.port],
        server={"fast_path": fast_path},
        blocking={"exempt_names": ["mail.isp.example"]},
    )
    try:
        async with running(config) as service:
            for transport in ("udp", "tcp"):
                # The exempted name and names below it: the upstream's answer.
                for name in ("mail.isp.example", "x.mail.isp.example"):
                    out = await dig(service.port, name, transport)
                    assert f"\t{UPSTREAM_ADDR}" in out and "Censored" not in out, out
                # The same entry still blocks every other name under isp.example, and an entry
                # listed below the exempted name is not hidden by it.
                for name in ("www.isp.example", "isp.example", "evil.mail.isp.example"):
                    out = await dig(service.port, name, transport)
                    assert f"\t{STOP_V4}" in out and "EDE: 16 (Censored)" in out, (name, out)
            # Asked again: now from the cache, still exempted (the C path hands it to Python).
            assert addresses(await ask(service.port, "mail.isp.example")) == [UPSTREAM_ADDR]
            snap = await service.snapshot()
            assert snap["blocked_by_entry"] == {str(ISP): 4, str(EVIL_BELOW): 2}
            assert snap["internal_errors"] == 0
    finally:
        await up.stop()


async def test_exempting_a_parent_does_not_hide_entries_below_it(tmp_path):
    """An insider exempting the ASP's whole domain cannot unblock what is listed under it."""
    up = await upstream()
    write_state(tmp_path, list_state(LISTED), 7)
    config = make_config(tmp_path, [up.port], blocking={"exempt_names": ["isp.example"]})
    try:
        async with running(config) as service:
            assert addresses(await ask(service.port, "www.isp.example")) == [UPSTREAM_ADDR]
            assert addresses(await ask(service.port, "evil.mail.isp.example")) == [STOP_V4]
            assert addresses(await ask(service.port, "www.bad.example")) == [STOP_V4]
            report = service.local_facts()["exemptions"]
            assert report["exempted"] == [{"name": "isp.example", "entries": [ISP]}]
    finally:
        await up.stop()


def test_exemption_config_errors_name_the_key(tmp_path):
    base = f'[sync]\nroot_keys = ["{ROOT_PUB}"]\n'
    cases = {
        '[blocking]\nexempt_names = ["mail.isp.example"]\n'
        '[rails]\nprotected_names = ["MAIL.isp.example"]\n': "also in rails.protected_names",
        '[blocking]\nexempt_names = ["example"]\n': "public suffix",
        '[blocking]\nexempt_names = ["not a name"]\n': "exempt_names",
        '[blocking]\nmode = "dry-run"\n': "blocking.mode",
    }
    for body, needle in cases.items():
        message = config_error(tmp_path / "resolver.toml", base + body)
        assert needle in message, message


# ---------------------------------------------------------------------------------------------
# Log-only mode


@pytest.mark.parametrize("fast_path", [True, False], ids=["c", "python"])
async def test_log_only_answers_and_counts_per_entry(tmp_path, fast_path):
    up = await upstream()
    up.add("alias.example", "CNAME", "www.bad.example.")
    write_state(tmp_path, list_state(LISTED), 7)
    config = make_config(
        tmp_path, [up.port], server={"fast_path": fast_path}, blocking={"mode": "log-only"}
    )
    try:
        async with running(config) as service:
            for _ in range(3):  # a miss, then cache hits: each one counted
                assert addresses(await ask(service.port, "www.bad.example")) == [UPSTREAM_ADDR]
            assert addresses(await ask_tcp(service.port, "www.isp.example")) == [UPSTREAM_ADDR]
            assert addresses(await ask(service.port, "fine.example")) == [UPSTREAM_ADDR]
            snap = await service.snapshot()
            assert snap["logged_by_entry"] == {str(BAD): 3, str(ISP): 1}
            _, text = await get(service.metrics_port, "/metrics")
            assert f'cordon_resolver_log_only_by_entry_total{{entry="{BAD}"}} 3.0' in text
            assert snap["outcomes"]["blocked"] == 0 and snap["blocked_by_entry"] == {}
            assert snap["internal_errors"] == 0
    finally:
        await up.stop()


# ---------------------------------------------------------------------------------------------
# resolver check / resolver status (one process)


async def test_check_and_status_commands(tmp_path):
    up = await upstream()
    write_state(tmp_path, list_state(LISTED), 7)
    config = make_config(
        tmp_path,
        [up.port],
        blocking={"exempt_names": ["mail.isp.example"]},
        rails={"protected_names": ["portal.shop.example"]},
    )
    toml = write_toml(tmp_path, 0, 0)
    try:
        async with running(config) as service:
            url = f"http://127.0.0.1:{service.metrics_port}"

            async def check(name: str) -> dict:
                code, out, err = await cli(
                    "check", name, "--config", str(toml), "--url", url, "--json"
                )
                assert code == 0, err
                return json.loads(out)

            v = await check("WWW.ISP.example.")
            assert (v["verdict"], v["entry"], v["serial"], v["listed_as"]) == (
                "blocked",
                ISP,
                7,
                "isp.example",
            )
            v = await check("x.mail.isp.example")
            assert (v["verdict"], v["entry"], v["exempted_by"]) == (
                "exempted",
                ISP,
                "mail.isp.example",
            )
            v = await check("evil.mail.isp.example")
            assert (v["verdict"], v["entry"]) == ("blocked", EVIL_BELOW)
            v = await check("shop.example")
            assert v["verdict"] == "not_listed" and v["protected_by"] == "portal.shop.example"
            v = await check("fine.example")
            assert v["verdict"] == "not_listed" and v["entry"] is None
            assert "no entry of serial 7" in v["reason"]

            # The human form names the verdict, entry and why.
            code, out, _ = await cli(
                "check", "www.isp.example", "--config", str(toml), "--url", url
            )
            assert code == 0 and "www.isp.example: blocked" in out and "entry       1" in out

            # Bad input: a clear error, non-zero exit, nothing crashed.
            code, out, err = await cli("check", "a..b.example", "--config", str(toml), "--url", url)
            assert code == 1 and "bad name" in err and "empty label" in err
            code, _, err = await cli("check", "x" * 300, "--config", str(toml), "--url", url)
            assert code == 1 and "bad name" in err
            code, _, err = await cli(
                "check", "fine.example", "--config", str(toml), "--url", "http://127.0.0.1:9"
            )
            assert code == 1 and "cannot reach the resolver's control endpoint" in err

            await ask(service.port, "www.isp.example")
            await ask(service.port, "fine.example")
            await ask(service.port, "fine.example")
            code, out, err = await cli("status", "--config", str(toml), "--url", url, "--json")
            assert code == 0, err
            s = json.loads(out)
            assert s["list"]["serial"] == 7 and s["list"]["entries"] == 3
            assert s["mode"] == "enforce"
            assert "sync_status" in s["alarms"]  # no `resolver sync` ran: said, not hidden
            assert s["cache"]["hits"] == 1 and s["cache"]["misses"] == 1
            assert s["upstreams"][f"127.0.0.1:{up.port}"]["up"] is True
            assert s["exemptions"]["exempted"] == [{"name": "mail.isp.example", "entries": [1]}]
            code, out, _ = await cli("status", "--config", str(toml), "--url", url)
            assert code == 0 and "serial 7, 3 entries" in out and "mail.isp.example" in out
    finally:
        await up.stop()


async def test_check_without_a_list_and_config_without_metrics(tmp_path):
    config = make_config(tmp_path, [9])
    async with running(config) as service:
        url = f"http://127.0.0.1:{service.metrics_port}"
        toml = write_toml(tmp_path, 0, 0)
        code, out, err = await cli("check", "fine.example", "--config", str(toml), "--url", url)
        assert code == 0 and "no_list" in out, err
        # Without --url, the metrics port of the file is the control endpoint; 0 cannot be one.
        code, _, err = await cli("check", "fine.example", "--config", str(toml))
        assert code == 2 and "metrics.port" in err and str(toml) in err


# ---------------------------------------------------------------------------------------------
# Several workers: the supervisor answers the control routes


def free_port() -> int:
    from test_resolver_service import free_dns_port

    return free_dns_port()


async def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.tools("dig")
async def test_workers_answer_check_status_and_log_only(tmp_path):
    up = await upstream()
    write_state(tmp_path, list_state(LISTED), 9)
    port, metrics_port = free_port(), free_port()
    toml = write_toml(
        tmp_path,
        port,
        metrics_port,
        f'[blocking]\nmode = "log-only"\nipv4 = "{STOP_V4}"\n',
    )
    text = toml.read_text().replace("127.0.0.1:9", f"127.0.0.1:{up.port}")
    toml.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "resolver.cli", "serve", "--config", str(toml), "--workers", "2"],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            code, out, _ = await cli("status", "--config", str(toml), "--json")
            return code == 0 and json.loads(out)["list"]["workers_with_list"] == 2

        await wait_for(ready, what="two workers with the list")
        for _ in range(4):
            out = await dig(port, "www.bad.example")
            assert f"\t{UPSTREAM_ADDR}" in out and "Censored" not in out
        code, out, err = await cli("check", "www.bad.example", "--config", str(toml), "--json")
        assert code == 0, err
        v = json.loads(out)
        assert (v["verdict"], v["entry"], v["serial"], v["mode"]) == ("logged", BAD, 9, "log-only")
        code, out, _ = await cli("status", "--config", str(toml), "--json")
        s = json.loads(out)
        assert s["log_only"]["total"] == 4 and s["log_only"]["by_entry"] == {str(BAD): 4}
        assert "log_only" in s["alarms"] and s["list"]["workers"] == 2
        code, _, err = await cli("check", "bad name!", "--config", str(toml))
        assert code == 1 and "bad name" in err
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await up.stop()
