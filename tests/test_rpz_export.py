"""`resolver rpz export --follow`: one private, whole file per verified list, repaired when
someone else removes or changes it, merged updates under min_interval, systemd readiness."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import pytest
from rpz_fixtures import NOW, ROOT_PUB, plain_state, write_list

from blocklist.config import validate_config
from blocklist.sync.local import LocalSigner
from resolver.rpz.config import RpzConfig
from resolver.rpz.export import ExportFollower, export_settings
from resolver.rpz.service import HashedEditionError

ZONE = "rpz.cordon.example."


def make(tmp: Path, **export) -> ExportFollower:
    data = {
        "sync": {"root_keys": [ROOT_PUB], "edition": "plain", "state_dir": str(tmp / "state")},
        "rpz": {"zone": ZONE, "ipv4": "192.0.2.80", "export": export},
    }
    config = validate_config(data, RpzConfig, "rpz.toml")
    out = tmp / "out" / "rpz.zone"
    out.parent.mkdir(parents=True, exist_ok=True)
    return ExportFollower(config, out, export_settings(config, "kresd"), interval=0.05)


def serial_of(path: Path) -> int:
    first = path.read_text().splitlines()[0]  # "; Cordon RPZ zone <zone>, list serial N"
    return int(first.rsplit(" ", 1)[1])


async def test_follow_writes_each_list_privately_and_repairs_the_file(tmp_path: Path) -> None:
    f = make(tmp_path)
    write_list(tmp_path / "state", ["blocked.example"], serial=1)
    await f.step()
    assert serial_of(f.output) == 1 and f.exports == 1
    assert stat.S_IMODE(f.output.stat().st_mode) == 0o640
    assert "blocked.example 60 IN A 192.0.2.80" in f.output.read_text()
    await f.step()
    assert f.exports == 1  # nothing new: nothing written

    write_list(tmp_path / "state", ["blocked.example", "new.test"], serial=2)
    await f.step()
    assert serial_of(f.output) == 2 and "new.test 60 IN A" in f.output.read_text()

    f.output.unlink()
    await f.step()
    assert serial_of(f.output) == 2 and f.repairs == 1
    whole = f.output.read_text()
    f.output.write_text(whole[: len(whole) // 2])  # damaged in place
    await f.step()
    assert f.output.read_text() == whole and f.repairs == 2
    assert [p.name for p in f.output.parent.iterdir()] == ["rpz.zone"]  # no temp files left


async def test_min_interval_merges_updates_into_one_write(tmp_path: Path) -> None:
    f = make(tmp_path, min_interval=3600)
    write_list(tmp_path / "state", ["a.example"], serial=1)
    await f.step()  # the first list is written at once
    write_list(tmp_path / "state", ["a.example", "b.example"], serial=2)
    await f.step()
    write_list(tmp_path / "state", ["b.example", "c.example"], serial=3)
    await f.step()
    assert serial_of(f.output) == 1 and f.exports == 1  # held: within min_interval
    f.min_interval = 0  # the interval has passed
    await f.step()
    assert serial_of(f.output) == 3 and f.exports == 2  # serial 2 never written on its own
    text = f.output.read_text()
    assert "c.example 60" in text and "\na.example 60" not in text


async def test_hashed_list_is_refused_at_start_and_skipped_later(tmp_path: Path) -> None:
    f = make(tmp_path)
    write_list(tmp_path / "state", ["a.example"], serial=1, edition="hashed")
    with pytest.raises(HashedEditionError, match="hashed edition"):
        await f.step()
    f = make(tmp_path / "again")
    write_list(tmp_path / "again" / "state", ["a.example"], serial=1)
    await f.step()
    write_list(tmp_path / "again" / "state", ["b.example"], serial=2, edition="hashed")
    await f.step()
    assert serial_of(f.output) == 1 and "a.example" in f.output.read_text()


async def test_follow_tells_systemd_it_is_ready_after_the_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    f = make(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(stop))
    try:
        # Started before any list exists: ready only once the first file is written.
        write_list(tmp_path / "state", ["a.example"], serial=7)
        message = (await asyncio.to_thread(sock.recv, 512)).decode()
        assert message.startswith("READY=1") and "list serial 7" in message
        assert serial_of(f.output) == 7
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        sock.close()
    assert os.path.exists(f.output)


async def test_a_list_not_signed_under_the_pinned_root_is_never_exported(tmp_path: Path) -> None:
    f = make(tmp_path)
    write_list(tmp_path / "state", ["a.example"], serial=1)
    await f.step()
    # Someone with write access to the state directory (not `resolver sync`) drops in a list
    # signed by another root, delisting a.example and listing a protected-looking name.
    forger = LocalSigner.generate(NOW)
    forger.save(
        tmp_path / "state", plain_state(["isp.example"]), serial=2, now=NOW, edition="plain"
    )
    await f.step()
    assert serial_of(f.output) == 1 and "a.example" in f.output.read_text()
    assert "isp.example" not in f.output.read_text() and f.exports == 1
