"""Helpers shared by the stop page tests (this module holds no tests).

Placeholder names only: `blocked-demo.test` (a domain entry) and `shared-host.example/album/42/`
(a URL entry). Every server listens on 127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from blocklist.config import validate_config
from blocklist.state import Kind
from stoppage.config import StoppageConfig
from stoppage.demo import write_signed_list
from stoppage.server import StopPageServer

HOST = "blocked-demo.test"
URL_HOST = "shared-host.example"
DOMAIN_ID = 1001
URL_ID = 1002
ENTRIES: list[tuple[str, int, Kind]] = [
    (HOST, DOMAIN_ID, Kind.DOMAIN),
    (f"http://{URL_HOST}/album/42/", URL_ID, Kind.URL),
]
FORM = "application/x-www-form-urlencoded"


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_data(root: str, **sections: dict) -> dict[str, Any]:
    data = {
        "sync": {
            "root_keys": [root],
            "state_dir": "sync-state",
            "authority_url": "http://127.0.0.1:9",
            "token": "not-a-real-token",
        },
        "authority": {
            "name": {"en": "Test Authority", "fr": "Autorité de test"},
            "website": "https://authority.example/",
            "contact": "contact@authority.example",
            "legal_basis": "Test Act, article 1.",
            "complaint_policy": "Complaints are decided within 7 days.",
        },
        "operator": {"name": "Test ISP", "contact": "abuse@isp.example"},
        "page": {
            "hotline": {"name": "Test hotline", "url": "https://hotline.example/report"},
            "confidential_help": [
                {"name": "Confidential help", "url": "https://help.example/", "note": "0800"}
            ],
            "victim_help": [{"name": "Child helpline", "url": "tel:116111"}],
        },
        "server": {"listen": ["127.0.0.1"], "port": 0, "list_poll_interval": 0.1},
        "complaints": {
            "state_dir": "stoppage-state",
            "retry_initial_seconds": 0.1,
            "retry_max_seconds": 0.4,
            "decision_poll_seconds": 0.2,
            "request_timeout": 5,
        },
        "metrics": {"enabled": True, "port": 0},
    }
    return _merge(data, sections)


def make_config(tmp_path: Path, root: str, **sections: dict) -> StoppageConfig:
    return validate_config(config_data(root, **sections), StoppageConfig, "test.toml", tmp_path)


def write_list(tmp_path: Path, entries=ENTRIES, **kwargs) -> str:
    """A signed list saved where the config's [sync] state_dir points; returns the root key."""
    return write_signed_list(tmp_path / "sync-state", entries, **kwargs)


@contextlib.asynccontextmanager
async def running(config: StoppageConfig) -> AsyncIterator[StopPageServer]:
    server = StopPageServer(config, "test.toml")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def base_url(server: StopPageServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def fetch(
    session: aiohttp.ClientSession,
    server: StopPageServer,
    path: str = "/",
    *,
    host: str = HOST,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, str]:
    hdrs = {"Host": host, **(headers or {})}
    async with session.request(
        method, base_url(server) + path, headers=hdrs, allow_redirects=False, **kwargs
    ) as resp:
        return resp.status, resp.headers, await resp.text()


def fresh_token(
    server: StopPageServer, host: str = HOST, entry_id: int | None = DOMAIN_ID, age: float = 10
) -> str:
    assert server.tokens is not None
    return server.tokens.issue(host, entry_id, issued=int(time.time() - age))


def complaint_fields(server: StopPageServer, **overrides: str) -> dict[str, str]:
    fields = {
        "token": fresh_token(server),
        "role": "site_owner",
        "reason": "This is my bakery's web site; it has never hosted anything illegal.",
        "contact": "owner@bakery.example",
        "language": "en",
        "website": "",
    }
    fields.update(overrides)
    return fields


async def submit(
    session: aiohttp.ClientSession,
    server: StopPageServer,
    fields: dict[str, str] | None = None,
    *,
    host: str = HOST,
    lang: str = "en",
    **kwargs: Any,
) -> tuple[int, Any, str]:
    return await fetch(
        session,
        server,
        f"/complaint?lang={lang}",
        host=host,
        method="POST",
        data=fields if fields is not None else complaint_fields(server),
        **kwargs,
    )


def ticket_and_secret(html: str) -> tuple[str, str]:
    ticket = re.search(r'id="ticket" dir="ltr">([^<]+)<', html)
    secret = re.search(r'id="secret" dir="ltr">([^<]+)<', html)
    assert ticket and secret, html
    return ticket.group(1), secret.group(1)


def status_of(html: str) -> str:
    found = re.search(r'id="status" data-status="([a-z]+)"', html)
    assert found, html
    return found.group(1)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll an (async or sync) predicate until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        await asyncio.sleep(interval)
