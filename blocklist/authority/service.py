"""The running authority: store, publisher and signer together, plus the background work
(re-signing before expiry, automatic publication, waking long-polling ASPs)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

from blocklist.authority.complaints import Complaints
from blocklist.authority.config import AuthorityConfig
from blocklist.authority.feedsources.poller import FeedPoller, PollPolicy
from blocklist.authority.keyring import Signer, load_signer
from blocklist.authority.lifecycle import Check, Lifecycle, LifecyclePolicy
from blocklist.authority.liveness import LivenessSettings, check_many
from blocklist.authority.publisher import Published, Publisher
from blocklist.authority.roles import require
from blocklist.authority.sinks import BackgroundPusher
from blocklist.authority.store import SYSTEM, PendingChanges, Principal, Store
from blocklist.domains import ProtectedNames
from blocklist.notification import AuditHead
from blocklist.state import Kind, ListState
from blocklist.urlhosts import urlhost_change

log = logging.getLogger("cordon.authority")
AUTO = Principal("system", 0, "auto-publish", "admin")


def unpublished(changes: PendingChanges, state: ListState) -> tuple[list, list[bytes]]:
    """The part of the pending changes the published state does not have yet.

    After a crash between writing a serial and recording it in the database, the database still
    calls those changes pending; filtering against the state makes the next publish idempotent.
    """

    def id_at(d: bytes) -> int | None:
        i = state.index_of(d)
        return None if i < 0 else state.entry(i).entry_id

    added = [e for e in changes.added if id_at(e.digest) != e.entry_id]
    removed = [
        d for d, i in zip(changes.removed, changes.removed_ids, strict=True) if id_at(d) == i
    ]
    return added, removed


def lock_state_dir(state_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on the state directory: one authority process may write it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / ".lock", "wb")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"another authority process is using {state_dir}; stop it first"
        ) from None
    return handle


class Authority:
    def __init__(
        self,
        config: AuthorityConfig,
        *,
        clock: Callable[[], float] = time.time,
        signer: Signer | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._lock_file = lock_state_dir(config.authority.state_dir)
        self.store = Store(
            config.database,
            protected=ProtectedNames(config.rails.protected_names),
            clock=clock,
            review_days=config.rails.review_days,
            bulk_share=config.rails.bulk_share,
            home_country=config.authority.country,
        )
        lc = config.lifecycle
        self.lifecycle = Lifecycle(
            self.store,
            LifecyclePolicy(
                takedown_hours=lc.takedown_hours,
                check_interval_hours=lc.check_interval_hours,
                gone_threshold=lc.gone_threshold,
                gone_min_interval_hours=lc.gone_min_interval_hours,
                removal_policy=lc.removal_policy,
                review_grace_days=lc.review_grace_days,
                sent_tolerance_minutes=lc.sent_tolerance_minutes,
            ),
        )
        lv = config.liveness
        self.liveness = LivenessSettings(
            resolver_host=lv.resolver_host,
            resolver_port=lv.resolver_port,
            timeout=lv.timeout,
            user_agent=lv.user_agent,
            concurrency=lv.concurrency,
            http_port=lv.http_port,
            https_port=lv.https_port,
            allow_private_addresses=lv.allow_private_addresses,
            extra_resolvers=tuple(lv.extra_resolver_addresses),
            proxy=lv.proxy,
        )
        self.complaints = Complaints(self.store)
        self.signer = signer or load_signer(config.keys_dir)
        root_keys = sorted(config.keys_dir.glob("root*.key"))
        if root_keys:
            log.warning(
                "root private key(s) still in the state directory: move them offline",
                extra={"fields": {"paths": [str(k) for k in root_keys]}},
            )
        self._signer_stamp = self._keys_stamp()
        self.publish_dir: Path = config.publish_dir
        self.publisher = Publisher(
            self.publish_dir,
            config.authority.list_id,
            config.authority.name,
            self.signer.key,
            self.signer.chain,
            expiry=int(config.publication.expiry_hours * 3600),
            min_poll_interval=config.publication.min_poll_interval,
            clock=clock,
            pinned_root=self.signer.root,
            audit_head=self.signed_audit_head,
        )
        # Each sink pushes in its own thread after every commit: a slow CDN never delays one.
        self.sinks = [
            BackgroundPusher(sink.build(self.publish_dir)) for sink in config.publication.sinks
        ]
        for pusher in self.sinks:
            self.publisher.add_listener(pusher.notify)
            pusher.notify()  # catch up with what was published while the service was down
        current = self.publisher.current()
        self._serial = current.serial if current else 0
        self._closing = False
        self.long_poll_max = config.api.long_poll_max_seconds
        self.deadline = int(config.compliance.deadline_hours * 3600)
        self._newer: asyncio.Event | None = None
        self.long_polls_waiting = 0  # notification requests parked until a newer serial
        self._publish_lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task] = []
        self._auto_task: asyncio.Task | None = None
        self._notification_cache: dict[str, tuple[int, bytes]] = {}
        fc = config.feeds
        self.feed_poller = FeedPoller(
            self.store,
            PollPolicy(fc.poll_minutes * 60, fc.max_backoff_minutes * 60, fc.check_seconds),
            self.list_changed,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._newer = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        self._tasks.append(asyncio.create_task(self._resign_loop()))
        if self.config.lifecycle.scheduler_minutes > 0:
            self._tasks.append(asyncio.create_task(self._lifecycle_loop()))
        if self.config.feeds.poll_minutes > 0:
            self._tasks.append(asyncio.create_task(self.feed_poller.run()))

    def wake_all(self) -> None:
        """Answer every pending long-poll now (shutdown must not wait for their timeouts)."""
        self._closing = True
        self._wake()

    async def stop(self) -> None:
        for task in [*self._tasks, self._auto_task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        for pusher in self.sinks:
            await asyncio.to_thread(pusher.close)
        await self.feed_poller.wait_threads()
        self.store.close()
        self._lock_file.close()

    def _keys_stamp(self) -> tuple[int, int]:
        keys = self.config.keys_dir
        return ((keys / "signing.key").stat().st_mtime_ns, (keys / "chain.txt").stat().st_mtime_ns)

    def reload_signer_if_renewed(self) -> bool:
        """Take a signing key renewed with `blocklist keys renew` without a restart."""
        stamp = self._keys_stamp()
        if stamp == self._signer_stamp:
            return False
        signer = load_signer(self.config.keys_dir)
        self.publisher.rekey(signer.key, signer.chain)
        self.signer, self._signer_stamp = signer, stamp
        log.info("new signing key in use")
        return True

    def _warn_if_key_expires_soon(self) -> None:
        expires = self.signer.verify(int(self.clock())).expires_soonest()
        left = expires - int(self.clock())
        if left < 14 * 86400:
            log.warning(
                "the signing key expires soon: run `blocklist keys renew`",
                extra={"fields": {"expires": expires, "days_left": left // 86400}},
            )

    async def _resign_loop(self) -> None:
        interval = self.config.publication.resign_minutes * 60
        while True:
            try:
                self.reload_signer_if_renewed()
                self._warn_if_key_expires_soon()
                if self.current_serial():
                    await asyncio.to_thread(self.publisher.resign)
                    self._notification_cache.clear()
            except Exception:
                log.exception("re-signing the notification failed")
            await asyncio.sleep(interval)

    async def _lifecycle_loop(self) -> None:
        interval = self.config.lifecycle.scheduler_minutes * 60
        while True:
            await asyncio.sleep(interval)
            try:
                await self.lifecycle_pass()
            except Exception:
                log.exception("lifecycle pass failed")

    async def lifecycle_pass(self) -> dict:
        """Check what is due, record outcomes, lapse overdue entries; publish if the list moved."""
        due = await asyncio.to_thread(self.lifecycle.due_for_check)
        results = await check_many(((i, Kind(k), v) for i, k, v in due), self.liveness)
        transitions: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        for entry_id, result in results.items():
            outcomes[result.outcome] += 1
            check = Check(
                result.outcome,
                result.detail,
                result.http_status,
                result.redirect,
                result.address,
                result.evidence,
            )
            moved = await asyncio.to_thread(self.lifecycle.record_check, entry_id, check)
            if moved:
                transitions[moved] += 1
        lapsed = await asyncio.to_thread(self.lifecycle.lapse_overdue)
        if lapsed:
            transitions["lapsed"] += len(lapsed)
        if transitions["removed_at_source"] or lapsed:
            self.list_changed()
        summary = {
            "checked": len(results),
            "outcomes": dict(outcomes),
            "transitions": dict(transitions),
        }
        log.info("lifecycle pass", extra={"fields": summary})
        return summary

    # ------------------------------------------------------------------ publication

    def signed_audit_head(self) -> AuditHead:
        """The audit head each notification carries when it is signed."""
        head = self.store.audit_head()
        return AuditHead(records=head.records, hash=head.hash)

    def current_serial(self) -> int:
        # Read without the publisher's lock: long-polls and /healthz must not wait for a publish.
        return self._serial

    def _mark(self, actor: Principal, changes: PendingChanges, published: Published) -> None:
        self.store.mark_published(
            actor,
            changes,
            serial=published.serial,
            session=str(published.session),
            checksum=published.checksum,
            entry_count=published.entry_count,
        )

    def publish_sync(self, actor: Principal = SYSTEM) -> dict:
        changes = self.store.pending_changes()
        base = self.publisher.hashed_state
        added, removed = unpublished(changes, base)
        removed, added = urlhost_change(base, removed, added, self.store.active_url_entries())
        current = self.publisher.current()
        if current is not None and not added and not removed:
            # Still record what the database thought pending (crash recovery), but no new serial.
            if changes.added or changes.removed:
                self._mark(actor, changes, current)
            return {"serial": current.serial, "changed": False, "entries": current.entry_count}
        published = self.publisher.publish(removed, added, bulk_change=changes.bulk)
        self._serial = published.serial
        self._mark(actor, changes, published)
        self._notification_cache.clear()
        return {
            "serial": published.serial,
            "changed": True,
            "added": len(added),
            "removed": len(removed),
            "entries": published.entry_count,
            "checksum": published.checksum.hex(),
            "bulk_change": changes.bulk,
        }

    async def publish(self, actor: Principal) -> dict:
        # Checked here as well as by the API's route table: the console calls this directly.
        require(actor, "publish")
        assert self._publish_lock is not None
        async with self._publish_lock:
            result = await asyncio.to_thread(self.publish_sync, actor)
        self._wake()
        if self.publisher.needs_compact:
            # The serial went out with deltas only (fast path); write its snapshots now.
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.create_task(self._compact()))
        return result

    async def _compact(self) -> None:
        # Not under the publish lock: the publisher lets a publication overtake a compaction.
        try:
            await asyncio.to_thread(self.publisher.compact)
            self._notification_cache.clear()
        except Exception:
            log.exception("writing the snapshot failed; the next publication retries")

    def list_changed(self) -> None:
        """Called after a change that affects the list: publish soon, if configured to."""
        delay = self.config.publication.auto_publish_seconds
        if delay <= 0 or (self._auto_task is not None and not self._auto_task.done()):
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self.publish(AUTO)
            except Exception:
                log.exception("automatic publication failed")

        self._auto_task = asyncio.create_task(later())

    # ------------------------------------------------------------------ long-poll

    def _wake(self) -> None:
        if self._newer is not None:
            event, self._newer = self._newer, asyncio.Event()
            event.set()

    async def wait_for_newer(self, after: int, wait: float) -> None:
        deadline = asyncio.get_running_loop().time() + wait
        self.long_polls_waiting += 1
        try:
            while self.current_serial() <= after and self._newer is not None and not self._closing:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # that arrives as its timeout fires, and a disconnecting client cancels this.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._newer.wait()
        finally:
            self.long_polls_waiting -= 1

    def notification_bytes(self, edition: str) -> bytes | None:
        path = self.publish_dir / edition / "notification.bin"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        cached = self._notification_cache.get(edition)
        if cached and cached[0] == stamp:
            return cached[1]
        data = path.read_bytes()
        self._notification_cache[edition] = (stamp, data)
        return data

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        current = self.publisher.current()
        changes = self.store.pending_changes()
        trusted = self.signer.verify(int(self.clock()))
        return {
            "list_id": self.config.authority.list_id,
            "authority": self.config.authority.name,
            "serial": current.serial if current else 0,
            "session": str(current.session) if current else None,
            "entries_published": current.entry_count if current else 0,
            "published_at": current.created if current else None,
            "checksum": current.checksum.hex() if current else None,
            "entries_by_status": self.store.counts(),
            "delist_pending": self.store.delist_pending_count(),
            "pending_publication": {"added": len(changes.added), "removed": len(changes.removed)},
            "signing_key_expires": trusted.expires_soonest(),
        }
