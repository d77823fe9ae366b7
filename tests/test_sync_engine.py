"""The pure trusted state, the updater over an in-memory source, and the follower's states —
no socket, no authority: bytes in, verified state out."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from blocklist.artefacts import encode_snapshot
from blocklist.config import validate_config
from blocklist.errors import ArtefactError
from blocklist.state import Edition, Entry, Kind, ListState
from blocklist.sync.config import SyncConfig
from blocklist.sync.engine import Result, Settings, update
from blocklist.sync.follower import STATUS_FILE, Follower
from blocklist.sync.local import LocalSigner
from blocklist.sync.memory import MemorySource
from blocklist.sync.rails import Rails
from blocklist.sync.replay import ReplayState
from blocklist.sync.states import Facts, assess
from blocklist.sync.trusted import Candidate, Outcome, TrustedState
from blocklist.sync.verified import VerifiedList

NOW = 1_800_000_000


def state_of(*names: str) -> ListState:
    return ListState.from_entries(
        [Entry.from_value(n, i + 1, Kind.DOMAIN) for i, n in enumerate(names)], plain=True
    ).hashed()


def publish(
    signer: LocalSigner, source: MemorySource, state: ListState, serial: int
) -> VerifiedList:

    verified = signer.sign(state, serial=serial, now=NOW)
    snap = encode_snapshot(verified.state, "national", Edition.HASHED, signer.session, serial, 0)
    source.files[verified.notification.snapshot.uri] = snap
    source.files["notification.bin"] = verified.notification_bytes
    return verified


def settings(signer: LocalSigner) -> Settings:
    return Settings([signer.root_public], "national", "hashed", 1000)


def rails(**kw) -> Rails:
    from blocklist.sync.config import RailsSection

    return Rails(RailsSection(**kw))


async def test_trusted_state_is_bytes_in_verified_state_out() -> None:
    signer, source = LocalSigner.generate(NOW), MemorySource()
    v1 = publish(signer, source, state_of("a.example"), 1)
    trusted = TrustedState(None, ReplayState(), settings(signer))
    cand = trusted.check(v1.notification_bytes, NOW)
    assert isinstance(cand, Candidate) and cand.deltas is None
    assert cand.fallback == "no list in force"
    snap = source.files[v1.notification.snapshot.uri]
    with pytest.raises(ArtefactError):
        trusted.from_snapshot(cand, snap[:-1], [])
    state = trusted.from_snapshot(cand, snap, [])
    out = trusted.decide(cand, state, rails=rails(), now=NOW, path="snapshot")
    assert out.result is Result.APPLIED and out.replay.serial == 1
    after = trusted.after(out)
    # The same bytes again: nothing to fetch.
    again = after.check(v1.notification_bytes, NOW)
    assert isinstance(again, Outcome) and again.result is Result.UNCHANGED
    assert source.requests == []  # the pure object fetched nothing


async def test_updater_over_the_memory_source() -> None:
    signer, source = LocalSigner.generate(NOW), MemorySource()
    v1 = publish(signer, source, state_of("a.example"), 1)
    out = await update(
        None, v1.notification_bytes, source.fetch, settings=settings(signer), rails=rails(), now=NOW
    )
    assert out.result is Result.APPLIED and out.path == "snapshot"
    assert source.requests == [v1.notification.snapshot.uri]


async def test_follower_states_over_the_memory_source(tmp_path: Path) -> None:
    signer, source = LocalSigner.generate(NOW), MemorySource()
    config = validate_config(
        {
            "sync": {
                "root_keys": [signer.root_text],
                "state_dir": str(tmp_path),
                "instance": "sim",
            },
            "rails": {"min_churn": 1},
        },
        SyncConfig,
        "sim.toml",
    )
    clock = [NOW]
    f = Follower(config, source=source, clock=lambda: clock[0])
    await f.load()
    assert f.sync_state() == "no_list"
    publish(signer, source, state_of("a.example", "b.example"), 1)
    assert (await f.poll_once()).result is Result.APPLIED and f.sync_state() == "in_force"
    publish(signer, source, state_of("x.example", "y.example", "z.example"), 2)
    assert (await f.poll_once()).result is Result.HELD and f.sync_state() == "held"
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["state"] == "held" and "held" in status["alarms"]
    for name in (STATUS_FILE, "state.bin", "replay.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    assert f.metrics.state.labels("held")._value.get() == 1
    (tmp_path / "release").write_text(f.held["checksum"])
    assert (await f.poll_once()).result is Result.APPLIED and f.sync_state() == "in_force"
    clock[0] = f.current.expires
    f.check_freshness()
    assert f.sync_state() == "expired" and "frozen" in f.alarms
    await f.flush_acks()
    assert source.acks and source.acks[-1]["serial"] == 2
    await f.close()


@pytest.mark.parametrize(
    ("facts", "state", "alarms"),
    [
        (Facts(10, None, None, None, 100), "no_list", {"no_list"}),
        (Facts(10, 1, 20, 5, 100), "in_force", set()),
        (Facts(10, 1, 20, 5, 100, held={"serial": 2, "message": "m"}), "held", {"held"}),
        (Facts(500, 1, 900, 5, 100), "stale", {"stale"}),
        (Facts(950, 1, 900, 5, 100, held={"serial": 2}), "expired", {"frozen", "stale", "held"}),
        (Facts(10, 1, 20, 5, 100, replay_damaged="x"), "in_force", {"replay_state"}),
        (Facts(10, 1, 20, 5, 100, suspicious="revoked: k"), "in_force", {"suspicious"}),
    ],
)
def test_state_machine(facts: Facts, state: str, alarms: set[str]) -> None:
    got_state, got_alarms = assess(facts)
    assert got_state == state and set(got_alarms) == alarms


async def test_watcher_refuses_an_older_state_file(tmp_path: Path) -> None:
    from blocklist.sync.replay import save as save_replay
    from blocklist.sync.watch import StateWatcher

    signer = LocalSigner.generate(NOW)
    taken: list[int] = []
    watcher = StateWatcher(tmp_path, [signer.root_public], lambda v: taken.append(v.serial))
    signer.save(tmp_path, state_of("a.example"), serial=5, now=NOW)
    assert await watcher.check() and taken == [5]
    signer.save(tmp_path, state_of("b.example"), serial=3, now=NOW)  # put back: older
    assert not await watcher.check() and taken == [5]
    signer.save(tmp_path, state_of("c.example"), serial=6, now=NOW)
    assert await watcher.check() and taken == [5, 6]
    # A recovery session with a lower serial is taken once the replay state names it.
    signer.session = uuid.uuid4()
    signer.save(tmp_path, state_of("d.example"), serial=2, now=NOW)
    assert not await watcher.check()
    save_replay(tmp_path, ReplayState(session=str(signer.session), serial=2))
    signer.save(tmp_path, state_of("d.example", "e.example"), serial=2, now=NOW)
    assert await watcher.check() and taken == [5, 6, 2]
