"""The sync follower: keep the latest list that can be proven genuine in force, and say so.

Start-up loads the persisted list and the replay state before any network access. Then the
follower long-polls the notification (falling back to jittered polling against static hosts,
to the next mirror when one fails or serves something refused, and exponential backoff on
errors), runs each update through the engine, persists the replay state then the list, swaps,
notifies consumers and acks. An expired notification or a long silence never drops the list:
it raises an alarm. A held update keeps the long-poll going (past the held serial), so the
authority's correction arrives as soon as it is published.

The follower's condition is one state (`SyncState`): no list, in force, held, stale or
expired; status.json, the `cordon_sync_state` metric and the alarms are derived from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from blocklist.crash import checkpoint
from blocklist.errors import ArtefactError
from blocklist.files import write_atomic
from blocklist.sync import replay as replay_file
from blocklist.sync import verified as persist
from blocklist.sync.config import SyncConfig
from blocklist.sync.engine import Outcome, Result, Settings, update
from blocklist.sync.http import FetchError, HttpSource, Source
from blocklist.sync.rails import Rails
from blocklist.sync.replay import ReplayState
from blocklist.sync.states import ALARMS, SUSPICIOUS, SYNC_STATES, Facts, assess
from blocklist.sync.verified import VerifiedList
from signing import FreshnessError, SigningError

log = logging.getLogger("cordon.sync")
STATUS_FILE = "status.json"
RELEASE_FILE = "release"
Subscriber = Callable[[VerifiedList], Awaitable[None]]


def _event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, message, extra={"fields": fields})


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.serial = Gauge("cordon_list_serial", "Serial of the list in force", registry=registry)
        self.entries = Gauge(
            "cordon_list_entries", "Entries in the list in force", registry=registry
        )
        self.verified_at = Gauge(
            "cordon_list_verified_timestamp_seconds",
            "When the notification in force was verified",
            registry=registry,
        )
        self.expires = Gauge(
            "cordon_list_expires_timestamp_seconds",
            "When the notification in force expires",
            registry=registry,
        )
        self.updates = Counter(
            "cordon_sync_updates", "Update steps by result", ["result"], registry=registry
        )
        self.errors = Counter(
            "cordon_sync_errors", "Failed update steps by kind", ["kind"], registry=registry
        )
        self.held = Gauge(
            "cordon_sync_held_updates", "Updates held by the rails", registry=registry
        )
        self.alarm = Gauge(
            "cordon_sync_alarm", "1 while an alarm is raised", ["alarm"], registry=registry
        )
        self.state = Gauge(
            "cordon_sync_state", "1 for the follower's current state", ["state"], registry=registry
        )
        self.fallbacks = Counter(
            "cordon_sync_mirror_fallbacks",
            "Times a mirror was passed over for the next one",
            registry=registry,
        )


class Follower:
    def __init__(
        self,
        config: SyncConfig,
        *,
        source: Source | None = None,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        sync = config.sync
        self.state_dir: Path = sync.state_dir
        self.source: Source = source or HttpSource(
            sync.notification_urls(),
            sync.bearer_token(),
            sync.request_timeout,
            sync.authority_url,
        )
        self.clock = clock
        self.settings = Settings(
            sync.pinned_roots,
            sync.list_id,
            sync.edition,
            sync.max_entries,
            sync.root_threshold,
            sync.max_serial_jump,
        )
        self.replay = ReplayState()
        self.fallbacks: list[str] = []
        self.last_apply: dict | None = None
        self._replay_damaged: str | None = None
        self._suspicious: str | None = None
        # The key-set version in force when `suspicious` was raised: a thief's later lists, even
        # within the rails, do not clear it; a list under a newer key set (the authority renewed
        # or revoked its keys) does.
        self._suspicious_keyset = 0
        self.rails = Rails(config.rails)
        self.registry = registry or CollectorRegistry()
        self.metrics = SyncMetrics(self.registry)
        self.current: VerifiedList | None = None
        self.subscribers: list[Subscriber] = []
        self.held: dict | None = None
        self.last_error: dict | None = None
        self.alarms: dict[str, str] = {}
        self._ack_task: asyncio.Task | None = None
        self._pending_ack: dict | None = None
        # Consumers' facts for the ack's status (e.g. local exemptions, log-only counts).
        self.ack_reports: list[Callable[[VerifiedList], dict]] = []
        self._stopping = asyncio.Event()
        self._poll: asyncio.Future | None = None

    # ------------------------------------------------------------------ consumers

    def subscribe(self, callback: Subscriber) -> None:
        """`callback` receives each new verified list; build lookups off the loop, then swap."""
        self.subscribers.append(callback)

    async def _publish(self, verified: VerifiedList) -> None:
        for callback in self.subscribers:
            try:
                await callback(verified)
            except Exception:
                log.exception("a consumer failed to take the new list")

    # ------------------------------------------------------------------ start-up

    async def load(self) -> VerifiedList | None:
        """Load the persisted list (no network). A damaged file is reported, never trusted."""
        replay: ReplayState | None = None
        try:
            replay = await asyncio.to_thread(replay_file.load, self.state_dir)
        except ArtefactError as exc:
            self._error("replay_state", f"the replay state cannot be used: {exc}")
            self._replay_damaged = str(exc)
        try:
            loaded = await asyncio.to_thread(
                persist.load,
                self.state_dir,
                self.settings.pinned_roots,
                self.settings.max_entries,
                self.settings.root_threshold,
            )
        except (ArtefactError, SigningError) as exc:
            self._error("state_file", f"the persisted list cannot be used: {exc}")
            loaded = None
        if replay is None and loaded is not None:
            # First start with a replay file, or the file was lost: the list in force is the floor.
            replay = ReplayState(session=loaded.notification.session, serial=loaded.serial)
        self.replay = replay or ReplayState()
        if loaded is not None and (
            loaded.serial < self.replay.serial
            and loaded.notification.session == self.replay.session
        ):
            self._error("state_file", "the persisted list is older than the replay state")
        if loaded is not None:
            self._set_current(loaded)
            _event("loaded persisted list", serial=loaded.serial, entries=len(loaded.state))
            await self._publish(loaded)
        # A first start has no list and nothing wrong: "no list" becomes an alarm when the
        # first fetch fails (run() checks after it), or now if the persisted list is unusable.
        if loaded is not None or self.last_error is not None:
            self.check_freshness()
        self._write_status()
        return loaded

    # ------------------------------------------------------------------ one step

    def _release(self) -> bytes | None:
        try:
            return bytes.fromhex((self.state_dir / RELEASE_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    async def step(self, data: bytes) -> Outcome:
        """Process one notification. Errors are recorded and re-raised; the list in force stays."""
        now = int(self.clock())
        try:
            outcome = await update(
                self.current,
                data,
                self.source.fetch,
                settings=self.settings,
                rails=self.rails,
                now=now,
                release=self._release(),
                replay=self.replay,
            )
        except FreshnessError as exc:
            self._error("expired", str(exc))
            self.check_freshness()
            self._write_status()
            raise
        except (SigningError, ArtefactError, FetchError, OSError) as exc:
            kind = getattr(exc, "reason", None) or "fetch"
            self._error(kind, str(exc))
            if kind in SUSPICIOUS:
                self._suspicious = f"{kind}: {exc}"
                self._suspicious_keyset = self.replay.keyset_version
                self.check_freshness()
            self._write_status()
            raise
        if outcome.replay is not None and outcome.replay != self.replay:
            # Durable before the list it admits is put in force or acked.
            try:
                await asyncio.to_thread(replay_file.save, self.state_dir, outcome.replay)
            except OSError as exc:
                self._error("persist", f"cannot persist the replay state: {exc}")
                self._write_status()
                raise
            self.replay = outcome.replay
            self._replay_damaged = None
        self.metrics.updates.labels(outcome.result.value).inc()
        if outcome.result is Result.APPLIED:
            assert outcome.verified is not None
            await self._install(outcome.verified)
            self.held = None
            if self.replay.keyset_version > self._suspicious_keyset:
                self._suspicious = None
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / RELEASE_FILE).unlink()
            _event(
                "applied list",
                serial=outcome.verified.serial,
                entries=len(outcome.verified.state),
                path=outcome.path,
                snapshot_reason=outcome.fallback if outcome.path == "snapshot" else "",
            )
            self.last_apply = {
                "serial": outcome.verified.serial,
                "path": outcome.path,
                "snapshot_reason": outcome.fallback if outcome.path == "snapshot" else "",
                "time": now,
            }
        elif outcome.result is Result.REFRESHED:
            assert outcome.verified is not None
            await asyncio.to_thread(persist.save, self.state_dir, outcome.verified)
            self._set_current(outcome.verified)
        elif outcome.result is Result.HELD:
            assert outcome.hold is not None
            if self.held is None or self.held.get("serial") != outcome.candidate_serial:
                _event(
                    "update held by the rails",
                    logging.WARNING,
                    serial=outcome.candidate_serial,
                    reason=outcome.hold.reason,
                    detail=outcome.hold.message,
                )
            self.held = {
                "serial": outcome.candidate_serial,
                "checksum": (outcome.candidate_checksum or b"").hex(),
                "reason": outcome.hold.reason,
                "message": outcome.hold.message,
                "since": (self.held or {}).get("since", now),
            }
        self.last_error = None if outcome.result is not Result.HELD else self.last_error
        self.metrics.held.set(1 if self.held else 0)
        self.check_freshness()
        self._write_status()
        if outcome.result in (Result.APPLIED, Result.HELD) or self._pending_ack is None:
            self._queue_ack()
        return outcome

    async def _install(self, verified: VerifiedList) -> None:
        # Persist before the swap: what is enforced is always what a restart would load.
        try:
            await asyncio.to_thread(persist.save, self.state_dir, verified)
        except OSError as exc:
            self._error("persist", f"cannot persist serial {verified.serial}: {exc}")
            self._write_status()
            raise
        self._set_current(verified)
        await self._publish(verified)
        checkpoint("state.applied")  # in force and persisted, not yet acked

    def _set_current(self, verified: VerifiedList) -> None:
        self.current = verified
        self.metrics.serial.set(verified.serial)
        self.metrics.entries.set(len(verified.state))
        self.metrics.verified_at.set(verified.verified_at)
        self.metrics.expires.set(verified.expires)

    # ------------------------------------------------------------------ alarms and status

    def _error(self, kind: str, message: str) -> None:
        self.metrics.errors.labels(kind).inc()
        self.last_error = {"kind": kind, "message": message, "time": int(self.clock())}
        _event("sync error", logging.WARNING, kind=kind, detail=message)

    def _facts(self) -> Facts:
        cur = self.current
        return Facts(
            now=int(self.clock()),
            serial=cur.serial if cur else None,
            expires=cur.expires if cur else None,
            verified_at=cur.verified_at if cur else None,
            max_age_seconds=self.config.sync.max_age_hours * 3600,
            held=self.held,
            replay_damaged=self._replay_damaged,
            suspicious=self._suspicious,
        )

    def check_freshness(self) -> dict[str, str]:
        """Re-assess the state (blocklist/sync/states.py); log, export and ack what changed."""
        state, alarms = assess(self._facts())
        for name in set(alarms) - set(self.alarms):
            _event("alarm raised", logging.ERROR, alarm=name, detail=alarms[name])
        for name in set(self.alarms) - set(alarms):
            _event("alarm cleared", alarm=name)
        for name in ALARMS:
            self.metrics.alarm.labels(name).set(1 if name in alarms else 0)
        for name in SYNC_STATES:
            self.metrics.state.labels(name).set(1 if name == state else 0)
        changed = set(alarms) != set(self.alarms)
        self.alarms = alarms
        if changed and self.current is not None:
            self._queue_ack()  # the authority's compliance view shows the alarm too
        return alarms

    def sync_state(self) -> str:
        """One of SYNC_STATES: the worst condition that holds."""
        return assess(self._facts())[0]

    def status(self) -> dict:
        cur = self.current
        now = int(self.clock())
        return {
            "state": self.sync_state(),
            "replay": {
                "session": self.replay.session,
                "serial": self.replay.serial,
                "keyset_version": self.replay.keyset_version,
                "root_version": self.replay.root_version,
            },
            "mirror": self.source.notification_url,
            "fallbacks": self.fallbacks,
            "last_apply": self.last_apply,
            "instance": self.config.sync.instance,
            "list_id": self.config.sync.list_id,
            "edition": self.config.sync.edition,
            "serial": cur.serial if cur else None,
            "checksum": cur.checksum.hex() if cur else None,
            "entries": len(cur.state) if cur else 0,
            "verified_at": cur.verified_at if cur else None,
            "age_seconds": now - cur.verified_at if cur else None,
            "expires": cur.expires if cur else None,
            "held": self.held,
            "alarms": self.alarms,
            "last_error": self.last_error,
            "updated": now,
        }

    def _write_status(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            data = json.dumps(self.status(), indent=2, sort_keys=True).encode()
            write_atomic(self.state_dir / STATUS_FILE, [data], mode=replay_file.PRIVATE_MODE)
        except OSError as exc:
            log.warning("cannot write status file: %s", exc)

    # ------------------------------------------------------------------ acks

    def _queue_ack(self) -> None:
        cur = self.current
        if cur is None:
            return
        self._pending_ack = {
            "instance": self.config.sync.instance,
            "serial": cur.serial,
            "checksum": cur.checksum.hex(),
            "status": {
                "held": self.held,
                "alarms": sorted(self.alarms),
                "last_error": (self.last_error or {}).get("kind"),
            },
        }
        for report in self.ack_reports:
            try:
                self._pending_ack["status"].update(report(cur))
            except Exception:
                log.exception("an ack report failed; acking without it")
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._ack_loop())

    async def _ack_loop(self) -> None:
        delay = 1.0
        while self._pending_ack is not None:
            body = self._pending_ack
            try:
                await self.source.ack(body)
                if self._pending_ack is body:
                    self._pending_ack = None
                delay = 1.0
            except FetchError as exc:
                self.metrics.errors.labels("ack").inc()
                log.warning("ack failed, retrying: %s", exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self.config.sync.max_backoff_seconds)

    async def flush_acks(self, timeout: float = 10) -> None:
        if self._ack_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ack_task), timeout)

    # ------------------------------------------------------------------ loop

    def _after(self) -> int | None:
        """The serial a long-poll waits to see surpassed: past a held one, so it keeps waiting."""
        if self.current is None:
            return None
        if self.held is not None and self.held.get("serial"):
            return max(self.current.serial, int(self.held["serial"]))
        return self.current.serial

    async def poll_once(self, wait: int = 0) -> Outcome:
        """One poll: the first mirror that answers; the next one when its answer is refused."""
        start = 0
        while True:
            try:
                data = await self.source.notification(self._after(), wait, start)
            except (FetchError, ArtefactError, OSError) as exc:
                self._note_fallbacks()
                self._error("fetch", str(exc))
                self._write_status()
                raise
            try:
                outcome = await self.step(data)
            except (SigningError, ArtefactError, FetchError, OSError) as exc:
                index = self.source.index
                if index + 1 >= self.source.mirror_count:
                    self._note_fallbacks()
                    self._write_status()
                    raise
                self.source.passed_over(f"{getattr(exc, 'reason', 'fetch')}: {exc}")
                self.metrics.fallbacks.inc()
                start = index + 1
                continue
            if self._withheld(outcome):
                self.source.passed_over(
                    "nothing newer than a notification signed "
                    f"{(int(self.clock()) - outcome.verified.notification.created) // 60} min ago"
                )
                self.metrics.fallbacks.inc()
                start = self.source.index + 1
                continue
            self._note_fallbacks()
            self._write_status()
            return outcome

    def _withheld(self, outcome: Outcome) -> bool:
        """True when a mirror answers "nothing new" although what is in force is old enough
        to suspect it withholds updates, and another mirror remains to ask."""
        if outcome.result is not Result.UNCHANGED or outcome.verified is None:
            return False
        if self.source.index + 1 >= self.source.mirror_count:
            return False
        age = int(self.clock()) - outcome.verified.notification.created
        return age > self.config.sync.stale_mirror_minutes * 60

    def _long_polling(self, wait: int) -> bool:
        return wait > 0 and self.source.is_api(self.source.notification_url)

    def _note_fallbacks(self) -> None:
        fallbacks = list(self.source.fallbacks)
        if fallbacks and fallbacks != self.fallbacks:
            _event("mirror fallback", logging.WARNING, reasons=fallbacks)
        self.fallbacks = fallbacks

    async def run(self) -> None:
        """Follow until `stop()`: long-poll, with polling and backoff as fallbacks."""
        if self.current is None:
            await self.load()
        backoff = 1.0
        loop = asyncio.get_running_loop()
        wait = self.config.sync.long_poll_seconds
        while not self._stopping.is_set():
            started = loop.time()
            pause = 0.0
            try:
                self._poll = asyncio.ensure_future(self.poll_once(wait))
                try:
                    outcome = await self._poll
                except asyncio.CancelledError:
                    if self._stopping.is_set():
                        break  # stop() ends a long-poll in flight
                    raise
                backoff = 1.0
                quick = loop.time() - started < min(wait / 2, 5)
                min_poll = (
                    outcome.verified.notification.min_poll_interval if outcome.verified else 60
                )
                idle = outcome.result in (Result.UNCHANGED, Result.REFRESHED)
                held = outcome.result is Result.HELD
                if (idle and (quick or wait == 0)) or (held and not self._long_polling(wait)):
                    # A static host answers at once: poll at the pace asked. A held update
                    # does not pause a long-poll: the next one waits past the held serial.
                    pause = min_poll * random.uniform(0.8, 1.2)
            except (FetchError, SigningError, ArtefactError, OSError):
                # Already recorded by poll_once/step; the list in force stays in force.
                pause = backoff * random.uniform(0.5, 1.5)
                backoff = min(backoff * 2, self.config.sync.max_backoff_seconds)
            except Exception:
                log.exception("unexpected error in the sync loop")
                pause = backoff
                backoff = min(backoff * 2, self.config.sync.max_backoff_seconds)
            self.check_freshness()
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)

    async def serve_metrics(self, port: int) -> web.AppRunner:
        """Expose this follower's metrics on loopback only."""

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def stop(self) -> None:
        self._stopping.set()
        if self._poll is not None and not self._poll.done():
            self._poll.cancel()

    async def close(self) -> None:
        self.stop()
        if self._ack_task is not None:
            self._ack_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ack_task
        await self.source.close()
