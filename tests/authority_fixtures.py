"""A running authority API on a loopback socket, with officers, an ASP and their tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from blocklist.authority.api import make_app
from blocklist.authority.config import AuthorityConfig
from blocklist.authority.console.web import mount
from blocklist.authority.keyring import ceremony
from blocklist.authority.service import Authority
from blocklist.authority.store import SYSTEM
from blocklist.config import validate_config
from signing import parse_public_key


@dataclass
class RunningAuthority:
    authority: Authority
    client: TestClient
    tokens: dict[str, str]
    root: bytes

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def call(self, who: str, method: str, path: str, json: object | None = None):
        resp = await self.client.request(method, path, json=json, headers=self.headers(who))
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        return resp.status, body


def make_config(tmp_path: Path, **sections: dict) -> AuthorityConfig:
    data = {
        "authority": {"name": "Test Authority", "list_id": "national", "state_dir": "state"},
        "rails": {"protected_names": ["www.protected.example"]},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return validate_config(data, AuthorityConfig, "test.toml", base=tmp_path)


async def start_authority(
    tmp_path: Path, mount_console: bool = False, **sections: dict
) -> RunningAuthority:
    config = make_config(tmp_path, **sections)
    root = ceremony(config.keys_dir, int(time.time()))
    auth = Authority(config)
    tokens = {"admin": auth.store.bootstrap_admin("admin")}
    for name, role in [
        ("alice", "officer"),
        ("bob", "approver"),
        ("carol", "approver"),
        ("olga", "oversight"),
    ]:
        tokens[name] = auth.store.add_officer(SYSTEM, name, role)[1]
    tokens["isp"] = auth.store.add_asp(SYSTEM, "isp-one")[1]
    tokens["isp-plain"] = auth.store.add_asp(SYSTEM, "isp-rpz", plain_allowed=True)[1]
    app = make_app(auth)
    if mount_console:
        mount(app, auth)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return RunningAuthority(auth, client, tokens, parse_public_key(root))
