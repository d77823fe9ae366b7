"""`resolver rpz export`: the zone as a file, written once or after every verified update.

Resolvers that load RPZ from a file (Knot Resolver's policy.rpz) re-read it when it changes, so
the file is only ever replaced whole: streamed to a temporary file beside it (mode 0640: the
plain list must not leak to every local user), fsynced, renamed over the old one. A reader sees
the old zone or the new one, never a half-written one; Knot Resolver would otherwise take the
records before the damage and silently drop the rest.

`--follow` re-exports after each new list `resolver sync` verified and persisted, at most once
per `rpz.export.min_interval`, and rewrites the file if anything else removed or changed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from blocklist.files import replacing
from blocklist.sync.verified import VerifiedList
from blocklist.sync.watch import StateWatcher
from resolver.rpz.config import RpzConfig
from resolver.rpz.service import HashedEditionError, require_plain
from resolver.rpz.zone import ZoneSettings, ZoneVersion, build_version, write_master_file

log = logging.getLogger("cordon.rpz.export")
FILE_MODE = 0o640
_BUFFER = 1 << 20


@dataclass(frozen=True)
class Written:
    """What one export wrote, and how to tell later whether the file is still that one."""

    path: Path
    serial: int
    entries: int
    records: int
    stamp: tuple[int, int, int]  # inode, mtime_ns, size


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def export_settings(config: RpzConfig, target: str) -> ZoneSettings:
    """The zone settings for a file loaded by `target`; ValueError when it cannot enforce them."""
    action = config.rpz.export_action(target)
    return dataclasses.replace(ZoneSettings.from_section(config.rpz), action=action)


def write_zone_file(
    path: Path, version: ZoneVersion, settings: ZoneSettings, serial_name: str = ""
) -> Written:
    """Replace `path` with the zone, atomically, readable by owner and group only."""
    text = {"mode": "w", "encoding": "ascii", "newline": "\n", "buffering": _BUFFER}
    with replacing(path, FILE_MODE, **text) as f:
        records = write_master_file(version, settings, f, serial_name)
    stamp = file_stamp(path)
    assert stamp is not None
    return Written(path, version.list_serial, len(version), records, stamp)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; nothing when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(message.encode())


def _event(message: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, message, extra={"fields": fields})


class ExportFollower:
    """Keeps `output` equal to the zone of the newest verified list."""

    def __init__(
        self,
        config: RpzConfig,
        output: Path,
        settings: ZoneSettings,
        *,
        source: str = "rpz.toml",
        interval: float | None = None,
    ) -> None:
        self.config = config
        self.output = output
        self.settings = settings
        self.source = source
        self.serial_name = config.rpz.export.serial_name
        self.min_interval = config.rpz.export.min_interval
        self.interval = config.rpz.list_poll_interval if interval is None else interval
        self.state_file = config.sync.state_dir / "state.bin"
        self.watcher = StateWatcher(
            config.sync.state_dir,
            config.sync.pinned_roots,
            self._on_change,
            interval=self.interval,
            max_entries=config.sync.max_entries,
        )
        self.pending: VerifiedList | None = None
        self.written: Written | None = None
        self._last_write = float("-inf")
        self._version: ZoneVersion | None = None
        self.exports = 0
        self.repairs = 0

    def _on_change(self, verified: VerifiedList) -> None:
        try:
            require_plain(verified, self.state_file, self.source)
        except HashedEditionError as exc:
            if self.written is None:
                raise
            _event(f"new list not exported: {exc}", logging.ERROR, list_serial=verified.serial)
            return
        self.pending = verified

    async def _write(self, version: ZoneVersion, why: str) -> None:
        written = await asyncio.to_thread(
            write_zone_file, self.output, version, self.settings, self.serial_name
        )
        self.written = written
        self._version = version
        self._last_write = time.monotonic()
        self.exports += 1
        _event(
            "zone file written",
            why=why,
            path=str(self.output),
            serial=version.serial,
            list_serial=version.list_serial,
            entries=written.entries,
            records=written.records,
            skipped_url=version.skipped.url,
        )

    async def step(self) -> None:
        """One look: take a new list, write it when allowed, repair a file changed under us."""
        await self.watcher.check()
        if self.pending is not None and (
            time.monotonic() - self._last_write >= self.min_interval or self.written is None
        ):
            verified, self.pending = self.pending, None
            version = await asyncio.to_thread(
                build_version, verified.state, verified.serial, self.settings
            )
            await self._write(version, "new list")
            return
        written, version = self.written, self._version
        if written is None or version is None or file_stamp(self.output) == written.stamp:
            return
        self.repairs += 1
        _event(
            "zone file removed or changed by someone else: writing it again",
            logging.WARNING,
            path=str(self.output),
            list_serial=version.list_serial,
        )
        await self._write(version, "repair")

    async def run(self, stop: asyncio.Event) -> None:
        ready = False
        if not self.state_file.exists():
            _event(
                "no verified list yet: waiting for `resolver sync` to write one",
                logging.WARNING,
                state_file=str(self.state_file),
            )
        while not stop.is_set():
            try:
                await self.step()
            except HashedEditionError:
                raise
            except OSError as exc:
                _event(f"cannot write the zone file: {exc}", logging.ERROR, path=str(self.output))
            if self.written is not None and not ready:
                ready = True
                sd_notify(f"READY=1\nSTATUS=list serial {self.written.serial}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        sd_notify("STOPPING=1")
