"""The ASP sync client against a real authority API and a fault-injecting static host."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import crashing
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from authority_fixtures import RunningAuthority, start_authority

from blocklist.artefacts import ArtefactError
from blocklist.config import validate_config
from blocklist.digests import digest
from blocklist.notification import Notification, open_notification, sign_notification
from blocklist.sync import verified as persist
from blocklist.sync.config import SyncConfig
from blocklist.sync.engine import Result
from blocklist.sync.follower import STATUS_FILE, Follower
from blocklist.sync.http import FetchError
from signing import (
    FreshnessError,
    RollbackError,
    SigningError,
    format_public_key,
    generate_key,
    issue_certificate,
    public_key_raw,
)
from signing.trust import DocType, SetKey, keyset_payload, sign_document

ROOT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


def sync_config(tmp_path: Path, url: str, token: str, root: bytes, **extra) -> SyncConfig:
    rails = extra.pop("rails", {})
    data = {
        "sync": {
            "authority_url": url,
            "token": token,
            "root_keys": [format_public_key(root)],
            "state_dir": str(tmp_path / "sync-state"),
            "list_id": "national",
            "long_poll_seconds": 5,
            "instance": "dns-1",
            "request_timeout": 2,
            "max_backoff_seconds": 1,
            **extra,
        },
        "rails": rails,
    }
    return validate_config(data, SyncConfig, "test.toml")


def base_url(api: RunningAuthority) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def add_and_approve(api: RunningAuthority, value: str) -> int:
    _, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "c"}
    )
    await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
    return body["id"]


async def publish(api: RunningAuthority, *values: str) -> dict:
    for v in values:
        await add_and_approve(api, v)
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200, body
    return body


async def delist(api: RunningAuthority, entry_id: int) -> None:
    await api.call("alice", "POST", f"/v1/entries/{entry_id}/delist", {"reason": "gone"})
    await api.call("bob", "POST", f"/v1/entries/{entry_id}/delist/confirm")


def follower_for(api: RunningAuthority, tmp_path: Path, **extra) -> Follower:
    config = sync_config(tmp_path, base_url(api), api.tokens["isp"], api.root, **extra)
    return Follower(config)


async def test_first_sync_then_deltas_then_restart(api: RunningAuthority, tmp_path: Path) -> None:
    await publish(api, "one.example", "two.example")
    f = follower_for(api, tmp_path)
    seen: list[int] = []

    async def consumer(v) -> None:
        seen.append(v.serial)

    f.subscribe(consumer)
    try:
        assert await f.load() is None
        outcome = await f.poll_once()
        assert outcome.result is Result.APPLIED and outcome.path == "snapshot"
        assert digest("one.example") in f.current.state
        await publish(api, "three.example")
        outcome = await f.poll_once()
        assert outcome.result is Result.APPLIED and outcome.path == "deltas"
        assert f.current.serial == 2 and len(f.current.state) == 3
        assert seen == [1, 2]
        await f.flush_acks()
        _, report = await api.call("olga", "GET", "/v1/compliance")
        row = next(r for r in report["instances"] if r["instance"] == "dns-1")
        assert row["serial"] == 2 and not row["divergent"] and row["lag"] == 0
        status = json.loads((tmp_path / "sync-state" / STATUS_FILE).read_text())
        assert status["serial"] == 2 and status["alarms"] == {}
    finally:
        await f.close()
    # Restart with the authority unreachable: the list is loaded before any network access.
    dead = sync_config(tmp_path, "http://127.0.0.1:9", "x", api.root)
    g = Follower(dead)
    try:
        loaded = await g.load()
        assert loaded is not None and loaded.serial == 2 and len(loaded.state) == 3
        with pytest.raises(FetchError, match="cannot fetch"):
            await g.poll_once()
        assert g.current.serial == 2 and g.last_error["kind"] == "fetch"
    finally:
        await g.close()


async def test_long_poll_follows_publications(api: RunningAuthority, tmp_path: Path) -> None:
    await publish(api, "one.example")
    f = follower_for(api, tmp_path)
    task = asyncio.create_task(f.run())
    try:
        for _ in range(100):
            if f.current is not None:
                break
            await asyncio.sleep(0.05)
        assert f.current.serial == 1
        started = time.monotonic()
        await publish(api, "two.example")
        while f.current.serial != 2 and time.monotonic() - started < 10:
            await asyncio.sleep(0.02)
        assert f.current.serial == 2
    finally:
        f.stop()
        await asyncio.wait_for(task, 10)
        await f.close()


async def test_plain_edition_needs_authorisation(api: RunningAuthority, tmp_path: Path) -> None:
    await publish(api, "one.example")
    f = follower_for(api, tmp_path, edition="plain")
    try:
        with pytest.raises(FetchError) as info:
            await f.poll_once()
        assert info.value.status == 403
    finally:
        await f.close()
    config = sync_config(
        tmp_path, base_url(api), api.tokens["isp-plain"], api.root, edition="plain"
    )
    g = Follower(config)
    try:
        await g.poll_once()
        assert g.current.state.values == ("one.example",)
    finally:
        await g.close()


# ---------------------------------------------------------------- a static host with faults


class StaticHost:
    """Serves notification and files from memory; each fault is switched on by a test."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: int | None = None
        self.delay = 0.0
        self.truncate: str | None = None
        self.requests: list[str] = []
        app = web.Application()
        app.router.add_get("/list/{name}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(name)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status:
            return web.Response(status=self.status, text="broken")
        data = self.files.get(name)
        if data is None:
            return web.Response(status=404)
        if self.truncate == name:
            data = data[: len(data) // 2]
        return web.Response(body=data)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/list/notification.bin"))


@pytest.fixture
async def host():
    h = StaticHost()
    await h.server.start_server()
    yield h
    await h.server.close()


def mirror(api: RunningAuthority, host: StaticHost) -> Notification:
    """Copy the authority's hashed publication onto the static host."""
    directory = api.authority.publish_dir / "hashed"
    for path in directory.iterdir():
        host.files["notification.bin" if path.name == "notification.bin" else path.name] = (
            path.read_bytes()
        )
    return open_notification(host.files["notification.bin"], [api.root], int(time.time()))


def static_follower(api: RunningAuthority, host: StaticHost, tmp_path: Path, **extra) -> Follower:
    config = sync_config(tmp_path, base_url(api), "", api.root, notification_url=host.url, **extra)
    return Follower(config)


def resign(api: RunningAuthority, note: Notification, key=None, chain=None) -> bytes:
    signer = api.authority.signer
    return sign_notification(note, key or signer.key, chain or signer.chain)


async def synced(api: RunningAuthority, host: StaticHost, tmp_path: Path) -> Follower:
    await publish(api, "one.example", "two.example")
    mirror(api, host)
    f = static_follower(api, host, tmp_path)
    await f.poll_once()
    assert f.current.serial == 1
    return f


async def test_static_host_works_without_long_poll(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        await publish(api, "three.example")
        mirror(api, host)
        assert (await f.poll_once(wait=30)).result is Result.APPLIED
        assert f.current.serial == 2
    finally:
        await f.close()


@pytest.mark.parametrize("status", [500, 503, 404, 401])
async def test_error_statuses_keep_the_list(api, host, tmp_path, status: int) -> None:
    f = await synced(api, host, tmp_path)
    try:
        host.status = status
        with pytest.raises(FetchError) as info:
            await f.poll_once()
        assert info.value.status == status
        assert f.current.serial == 1 and f.last_error["kind"] == "fetch"
    finally:
        await f.close()


async def test_slow_authority_times_out(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        host.delay = 5
        with pytest.raises(FetchError, match="TimeoutError"):
            await f.poll_once()
        assert f.current.serial == 1
    finally:
        await f.close()


async def test_truncated_and_oversized_files(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        await publish(api, "three.example")
        note = mirror(api, host)
        name = note.snapshot.uri
        # The delta is fine, so break it too to force the snapshot path.
        for d in note.deltas:
            host.files[d.uri] = host.files[d.uri][:10]
        host.truncate = name
        with pytest.raises(ArtefactError) as info:
            await f.poll_once()
        assert info.value.reason == "truncated" and f.current.serial == 1
        host.truncate = None
        host.files[name] = host.files[name] + b"\0" * 100
        with pytest.raises(ArtefactError) as info:
            await f.poll_once()
        assert info.value.reason == "oversized" and f.current.serial == 1
    finally:
        await f.close()


async def test_wrong_hash_falls_back_then_fails(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        await publish(api, "three.example")
        note = mirror(api, host)
        snap = bytearray(host.files[note.snapshot.uri])
        snap[-1] ^= 1
        host.files[note.snapshot.uri] = bytes(snap)
        # The delta is still good: the update goes through it without touching the snapshot.
        assert (await f.poll_once()).path == "deltas"
        await publish(api, "four.example")
        note = mirror(api, host)
        for d in note.deltas:
            tampered = bytearray(host.files[d.uri])
            tampered[-1] ^= 1
            host.files[d.uri] = bytes(tampered)
        snap = bytearray(host.files[note.snapshot.uri])
        snap[-1] ^= 1
        host.files[note.snapshot.uri] = bytes(snap)
        with pytest.raises(ArtefactError) as info:
            await f.poll_once()
        assert info.value.reason == "hash_mismatch" and f.current.serial == 2
    finally:
        await f.close()


async def test_tampered_and_uncertified_notifications(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        await publish(api, "three.example")
        note = mirror(api, host)
        good = host.files["notification.bin"]
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 1
        host.files["notification.bin"] = bytes(bad)
        with pytest.raises((SigningError, ArtefactError)):
            await f.poll_once()
        rogue_root, rogue = generate_key(), generate_key()
        now = int(time.time())
        chain = [issue_certificate(rogue_root, public_key_raw(rogue), "signing", now - 9, now + 99)]
        host.files["notification.bin"] = resign(api, note, rogue, chain)
        with pytest.raises(SigningError) as info:
            await f.poll_once()
        # A key set has been seen: a bare certificate chain can no longer vouch for any key.
        assert info.value.reason == "superseded"
        rogue_set = sign_document(
            [rogue_root],
            DocType.KEY_SET,
            keyset_payload(
                version=99,
                root_version=1,
                issued=now,
                keys=[SetKey(public_key_raw(rogue), "rogue", now - 9, now + 99)],
            ),
        )
        host.files["notification.bin"] = resign(api, note, rogue, [rogue_set])
        with pytest.raises(SigningError) as info:
            await f.poll_once()
        assert info.value.reason == "unknown_key"
        assert f.current.serial == 1
        host.files["notification.bin"] = good
        assert (await f.poll_once()).result is Result.APPLIED
    finally:
        await f.close()


async def test_replayed_older_notification_is_rollback(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        old = host.files["notification.bin"]
        await publish(api, "three.example")
        mirror(api, host)
        await f.poll_once()
        host.files["notification.bin"] = old
        with pytest.raises(RollbackError):
            await f.poll_once()
        assert f.current.serial == 2
    finally:
        await f.close()


async def test_gap_in_deltas_and_new_session_take_the_snapshot(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        await publish(api, "three.example")
        note = mirror(api, host)
        gap = note.model_copy(update={"deltas": []})
        host.files["notification.bin"] = resign(api, gap)
        outcome = await f.poll_once()
        assert outcome.path == "snapshot" and f.current.serial == 2
        published = await asyncio.to_thread(api.authority.publisher.new_session)
        mirror(api, host)
        outcome = await f.poll_once()
        assert outcome.path == "snapshot" and f.current.serial == published.serial
        assert f.current.notification.session == str(published.session)
    finally:
        await f.close()


async def test_delta_with_wrong_result_checksum(api, host, tmp_path) -> None:
    """A correctly signed notification whose delta does not produce the signed state."""
    f = await synced(api, host, tmp_path)
    try:
        await publish(api, "three.example")
        note = mirror(api, host)
        ref = note.deltas[-1]
        raw = bytearray(zlib.decompress(host.files[ref.uri]))
        raw[70] ^= 1  # the delta's result checksum
        forged = zlib.compress(bytes(raw))
        host.files[ref.uri] = forged
        new_ref = ref.model_copy(
            update={"size": len(forged), "sha256": hashlib.sha256(forged).hexdigest()}
        )
        host.files["notification.bin"] = resign(
            api, note.model_copy(update={"deltas": [*note.deltas[:-1], new_ref]})
        )
        outcome = await f.poll_once()
        # The delta is refused; the snapshot gives the signed state.
        assert outcome.path == "snapshot" and f.current.serial == 2
        assert f.current.checksum.hex() == note.state_checksum
    finally:
        await f.close()


async def test_equivocation_same_serial_other_state(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        note = open_notification(host.files["notification.bin"], [api.root], int(time.time()))
        lying = note.model_copy(update={"state_checksum": "ab" * 32, "expires": note.expires + 60})
        host.files["notification.bin"] = resign(api, lying)
        with pytest.raises(ArtefactError) as info:
            await f.poll_once()
        assert info.value.reason == "equivocation"
    finally:
        await f.close()


async def test_resigned_notification_refreshes_expiry(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        before = f.current.expires
        note = open_notification(host.files["notification.bin"], [api.root], int(time.time()))
        host.files["notification.bin"] = resign(
            api, note.model_copy(update={"expires": before + 3600})
        )
        assert (await f.poll_once()).result is Result.REFRESHED
        assert f.current.expires == before + 3600
        loaded = persist.load(tmp_path / "sync-state", [api.root], 1000)
        assert loaded.expires == before + 3600
    finally:
        await f.close()


async def test_expired_notification_freezes_with_alarm(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        later = f.current.expires + 10
        f.clock = lambda: later
        with pytest.raises(FreshnessError):
            await f.poll_once()
        assert f.current.serial == 1  # still enforced
        assert "frozen" in f.alarms
        status = json.loads((tmp_path / "sync-state" / STATUS_FILE).read_text())
        assert "frozen" in status["alarms"]
        assert f.metrics.alarm.labels("frozen")._value.get() == 1
    finally:
        await f.close()


async def test_stale_alarm_after_max_age(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    try:
        f.clock = lambda: f.current.verified_at + 27 * 3600
        assert "stale" in f.check_freshness()
    finally:
        await f.close()


async def test_disk_write_failure_keeps_previous_list(api, host, tmp_path) -> None:
    f = await synced(api, host, tmp_path)
    state_file = tmp_path / "sync-state" / persist.STATE_FILE
    try:
        # A directory where the state file goes: the atomic rename fails for real.
        state_file.unlink()
        state_file.mkdir()
        await publish(api, "three.example")
        mirror(api, host)
        with pytest.raises(OSError):
            await f.poll_once()
        assert f.current.serial == 1 and f.last_error["kind"] == "persist"
        state_file.rmdir()
        assert (await f.poll_once()).result is Result.APPLIED and f.current.serial == 2
    finally:
        await f.close()


async def test_unreadable_state_file_starts_empty_and_says_so(api, host, tmp_path) -> None:
    (tmp_path / "sync-state" / persist.STATE_FILE).mkdir(parents=True)
    f = static_follower(api, host, tmp_path)
    try:
        assert await f.load() is None
        assert f.last_error["kind"] == "state_file" and "cannot read" in f.last_error["message"]
        assert "no_list" in f.alarms
    finally:
        await f.close()


async def test_rails_protected_name_held_then_released(api, host, tmp_path) -> None:
    await publish(api, "one.example")
    mirror(api, host)
    f = static_follower(api, host, tmp_path, rails={"protected_names": ["www.isp-own.example"]})
    try:
        await f.poll_once()
        await publish(api, "isp-own.example")
        mirror(api, host)
        outcome = await f.poll_once()
        assert outcome.result is Result.HELD and outcome.hold.reason == "protected_name"
        assert f.current.serial == 1 and f.held["serial"] == 2
        assert "www.isp-own.example" in f.held["message"]
        assert f.metrics.held._value.get() == 1
        # The operator accepts the held update.
        (tmp_path / "sync-state" / "release").write_text(f.held["checksum"])
        assert (await f.poll_once()).result is Result.APPLIED
        assert f.current.serial == 2 and f.held is None
    finally:
        await f.close()


async def test_rails_growth_held_unless_bulk(api, host, tmp_path) -> None:
    await publish(api, "one.example", "two.example")
    mirror(api, host)
    f = static_follower(api, host, tmp_path, rails={"min_change": 2, "max_growth": 0.5})
    try:
        await f.poll_once()
        await publish(api, *[f"grow{i}.example" for i in range(4)])
        note = mirror(api, host)
        outcome = await f.poll_once()
        assert outcome.result is Result.HELD and outcome.hold.reason == "growth"
        host.files["notification.bin"] = resign(api, note.model_copy(update={"bulk_change": True}))
        assert (await f.poll_once()).result is Result.APPLIED
        assert len(f.current.state) == 6
    finally:
        await f.close()


async def test_rails_shrink_held(api, host, tmp_path) -> None:
    ids = [await add_and_approve(api, f"s{i}.example") for i in range(6)]
    await api.call("alice", "POST", "/v1/publish")
    mirror(api, host)
    f = static_follower(api, host, tmp_path, rails={"min_change": 1, "max_shrink": 0.25})
    try:
        await f.poll_once()
        for i in ids[:4]:
            await delist(api, i)
        await api.call("alice", "POST", "/v1/publish")
        mirror(api, host)
        outcome = await f.poll_once()
        assert outcome.result is Result.HELD and outcome.hold.reason == "shrink"
        assert len(f.current.state) == 6
    finally:
        await f.close()


def test_damaged_state_file_is_refused(tmp_path: Path) -> None:
    root = public_key_raw(generate_key())
    d = tmp_path / "s"
    d.mkdir()
    for blob in (b"", b"CSTA", b"garbage" * 10, b"CSTA\x01" + b"\0" * 20):
        (d / persist.STATE_FILE).write_bytes(blob)
        with pytest.raises((ArtefactError, SigningError)):
            persist.load(d, [root], 100)


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    from blocklist.config import ConfigError, load_config

    path = tmp_path / "resolver.toml"
    path.write_text('[sync]\nroot_keys = ["ed25519:nope"]\nlong_poll_seconds = "x"\nsurprise = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, SyncConfig)
    text = str(info.value)
    assert f"{path}: sync.root_keys" in text
    assert f"{path}: sync.long_poll_seconds" in text
    assert f"{path}: sync.surprise: unknown key" in text


# ---------------------------------------------------------------- SIGKILL during apply


def _write_toml(path: Path, config: SyncConfig) -> None:
    s = config.sync
    path.write_text(
        "[sync]\n"
        f'authority_url = "{s.authority_url}"\n'
        f'notification_url = "{s.notification_url}"\n'
        f'root_keys = ["{s.root_keys[0]}"]\n'
        f'state_dir = "{s.state_dir}"\n'
        f'instance = "{s.instance}"\n'
        "request_timeout = 5\n"
    )


CRASH_POINTS = ["state.partial", "state.tmp", "state", "state.applied"]


async def test_sigkill_at_every_step_of_an_apply(api, host, tmp_path) -> None:
    await publish(api, "one.example")
    mirror(api, host)
    f = static_follower(api, host, tmp_path)
    config = f.config
    await f.close()
    toml = tmp_path / "resolver.toml"
    _write_toml(toml, config)
    # No setting arms a crash point in a production process (the old variable is ignored);
    # only the harness tests/crashing.py does. The first, unarmed apply passes every point.
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR), "CORDON_TEST_CRASH_AT": "state"}

    def run_once(crash: str | None) -> subprocess.CompletedProcess:
        args = ("resolver.cli", "sync", "--config", str(toml), "--once")
        return subprocess.run(
            crashing.argv(crash, *args) if crash else [sys.executable, "-m", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert (await asyncio.to_thread(run_once, None)).returncode == 0
    state_dir = config.sync.state_dir
    serial = 1
    for n, point in enumerate(CRASH_POINTS):
        await publish(api, f"crash{n}.example")
        mirror(api, host)
        result = await asyncio.to_thread(run_once, point)
        assert result.returncode == -9, (point, result.stderr[-2000:])
        loaded = persist.load(state_dir, [api.root], 1000)
        # Before the rename the old list is whole; after it the new one is. Never empty or mixed.
        expected = serial if point in ("state.partial", "state.tmp") else serial + 1
        assert loaded is not None and loaded.serial == expected, point
        assert loaded.checksum.hex() == (
            open_notification(
                loaded.notification_bytes, [api.root], loaded.verified_at
            ).state_checksum
        )
        result = await asyncio.to_thread(run_once, None)
        assert result.returncode == 0, result.stderr[-2000:]
        serial += 1
        assert persist.load(state_dir, [api.root], 1000).serial == serial
    leftovers = [p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= len(CRASH_POINTS)  # temp files from kills are harmless leftovers


def test_sync_status_command(tmp_path: Path) -> None:
    toml = tmp_path / "resolver.toml"
    root = format_public_key(public_key_raw(generate_key()))
    toml.write_text(f'[sync]\nroot_keys = ["{root}"]\nstate_dir = "st"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
    cmd = [sys.executable, "-m", "resolver.cli", "sync", "--config", str(toml)]
    result = subprocess.run([*cmd, "--status"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "no status yet" in result.stderr
    (tmp_path / "st").mkdir()
    status = {
        "instance": "i",
        "list_id": "national",
        "edition": "hashed",
        "serial": 4,
        "entries": 2,
        "checksum": "ab" * 32,
        "verified_at": 1,
        "age_seconds": 5,
        "expires": 2,
        "held": None,
        "alarms": {"frozen": "expired"},
        "last_error": None,
    }
    (tmp_path / "st" / STATUS_FILE).write_text(json.dumps(status))
    result = subprocess.run([*cmd, "--status"], env=env, capture_output=True, text=True)
    # An alarm is raised: monitoring must see a failure.
    assert (
        result.returncode == 3 and "serial      4" in result.stdout and "expired" in result.stdout
    )
    status["alarms"] = {}
    (tmp_path / "st" / STATUS_FILE).write_text(json.dumps(status))
    result = subprocess.run([*cmd, "--status"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    status["held"] = {"serial": 5, "checksum": "cd" * 32, "reason": "growth", "message": "m"}
    (tmp_path / "st" / STATUS_FILE).write_text(json.dumps(status))
    result = subprocess.run([*cmd, "--status"], env=env, capture_output=True, text=True)
    assert result.returncode == 3
    result = subprocess.run([*cmd, "--release-held"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "serial 5 will be applied" in result.stdout
    status["held"] = None
    (tmp_path / "st" / STATUS_FILE).write_text(json.dumps(status))
    result = subprocess.run([*cmd, "--release-held"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "no held update" in result.stderr


async def test_follower_process_serves_metrics_and_stops_on_sigterm(api, tmp_path) -> None:
    import socket
    import urllib.request

    await publish(api, "one.example")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    toml = tmp_path / "resolver.toml"
    toml.write_text(
        "[sync]\n"
        f'authority_url = "{base_url(api)}"\n'
        f'token = "{api.tokens["isp"]}"\n'
        f'root_keys = ["{format_public_key(api.root)}"]\n'
        f'state_dir = "{tmp_path / "st"}"\n'
        f"metrics_port = {port}\n"
        "long_poll_seconds = 30\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolver.cli",
        "sync",
        "--config",
        str(toml),
        env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()

    try:
        text = ""
        for _ in range(100):
            try:
                text = await asyncio.to_thread(scrape)
            except OSError:
                text = ""
            # The serial is exported at the swap, the alarms at the freshness check after it.
            if "cordon_list_serial 1.0" in text and 'alarm="frozen"' in text:
                break
            await asyncio.sleep(0.1)
        assert "cordon_list_serial 1.0" in text
        assert 'cordon_sync_alarm{alarm="frozen"} 0.0' in text
        # SIGTERM ends the long-poll in flight and the process exits cleanly.
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
