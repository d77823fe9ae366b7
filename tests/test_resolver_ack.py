"""Exemptions and log-only mode as the authority sees them: `resolver sync` against the real
authority API applies a list that lists an exempted name (instead of holding it), and its acks
carry every exemption in use and the log-only counts of the running resolver, which the
authority's compliance view shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority
from resolver_fixtures import STOP_V4, FakeUpstream, addresses, ask, running
from test_sync import add_and_approve, base_url, delist

from blocklist.config import validate_config
from blocklist.sync.engine import Result
from blocklist.sync.follower import Follower
from resolver import ackreport
from resolver.config import ResolverConfig
from signing import format_public_key


@pytest.fixture
async def api(tmp_path: Path):
    running_api = await start_authority(tmp_path)
    yield running_api
    await running_api.client.close()


def resolver_config(api: RunningAuthority, tmp_path: Path, up: int, **sections) -> ResolverConfig:
    data: dict = {
        "sync": {
            "authority_url": base_url(api),
            "token": api.tokens["isp"],
            "root_keys": [format_public_key(api.root)],
            "state_dir": str(tmp_path / "sync-state"),
            "instance": "dns-1",
            "request_timeout": 2,
        },
        "server": {"listen": ["127.0.0.1"], "port": 0, "list_poll_interval": 0.05},
        "upstream": {"servers": [f"127.0.0.1:{up}"], "timeout": 0.4},
        "blocking": {"ipv4": STOP_V4},
        "metrics": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return validate_config(data, ResolverConfig, "test.toml")


async def publish(api: RunningAuthority, *values: str) -> list[int]:
    ids = [await add_and_approve(api, v) for v in values]
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200, body
    return ids


async def compliance_status(api: RunningAuthority) -> dict:
    _, report = await api.call("olga", "GET", "/v1/compliance")
    return next(r for r in report["instances"] if r["instance"] == "dns-1")


async def test_exempted_name_applies_the_list_and_is_reported(api, tmp_path):
    up = await FakeUpstream().start()
    up.add("www.isp-own.example", "A", "198.51.100.7")
    own, other = await publish(api, "isp-own.example", "one.example")
    config = resolver_config(
        api, tmp_path, up.port, blocking={"exempt_names": ["www.isp-own.example"]}
    )
    follower = Follower(config)
    assert ackreport.install(follower, config) is None  # enforce mode: no log-only report
    try:
        await follower.load()
        outcome = await follower.poll_once()
        assert outcome.result is Result.APPLIED and follower.held is None
        await follower.flush_acks()
        row = await compliance_status(api)
        assert row["serial"] == 1 and not row["divergent"]
        assert row["status"]["exemptions"] == {
            "exempted": [{"name": "www.isp-own.example", "entries": [own]}],
            "exempted_total": 1,
            "exempt_names": 1,
        }
        # The resolver reading what sync wrote: the exempted name resolves, the rest is blocked.
        async with running(config) as service:
            assert addresses(await ask(service.port, "www.isp-own.example")) == ["198.51.100.7"]
            assert addresses(await ask(service.port, "shop.isp-own.example")) == [STOP_V4]
            assert addresses(await ask(service.port, "one.example")) == [STOP_V4]
        # The entry is delisted: the exemption is no longer in use, and the ack says so.
        await delist(api, own)
        await api.call("alice", "POST", "/v1/publish")
        assert (await follower.poll_once()).result is Result.APPLIED
        await follower.flush_acks()
        row = await compliance_status(api)
        assert row["serial"] == 2 and row["status"]["exemptions"]["exempted"] == []
        assert other > own
    finally:
        await follower.close()
        await up.stop()


async def test_log_only_counts_reach_the_authority(api, tmp_path):
    up = await FakeUpstream().start()
    up.add("www.two.example", "A", "198.51.100.7")
    _, two = await publish(api, "one.example", "two.example")
    config = resolver_config(api, tmp_path, up.port, blocking={"mode": "log-only"})
    first = Follower(config)
    try:
        await first.load()
        assert (await first.poll_once()).result is Result.APPLIED
    finally:
        await first.close()
    async with running(config) as service:
        for _ in range(3):
            assert addresses(await ask(service.port, "www.two.example")) == ["198.51.100.7"]
        # `resolver sync` finds the resolver on the metrics port of the same file.
        synced = config.model_copy(
            update={"metrics": config.metrics.model_copy(update={"port": service.metrics_port})}
        )
        follower = Follower(synced)
        report = ackreport.install(follower, synced)
        assert report is not None
        try:
            await report.refresh()
            await follower.load()
            await follower.poll_once()
            await follower.flush_acks()
        finally:
            await follower.close()
    row = await compliance_status(api)
    assert row["status"]["blocking"] == {
        "mode": "log-only",
        "would_block": 3,
        "by_entry": {str(two): 3},
    }
    # The resolver is gone: the ack still goes out and says the counts are unknown.
    follower = Follower(synced)
    report = ackreport.install(follower, synced)
    try:
        await report.refresh()  # type: ignore[union-attr]
        assert report.error and "cannot reach" in report.error  # type: ignore[union-attr]
        await follower.load()
        await follower.poll_once()
        await follower.flush_acks()
    finally:
        await follower.close()
    row = await compliance_status(api)
    assert row["status"]["blocking"] == {"mode": "log-only", "would_block": None}
