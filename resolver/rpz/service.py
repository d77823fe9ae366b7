"""`resolver rpz serve`: follow the verified list on disk, keep the zone, serve and NOTIFY.

`resolver sync` (plain edition) writes state.bin; a StateWatcher here re-verifies each new file,
builds the next zone version and its diff on a worker thread, swaps one reference, records the
diff for IXFR, and sends NOTIFY to the secondaries.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from blocklist.config import ConfigError
from blocklist.state import Edition
from blocklist.sync import verified as persist
from blocklist.sync.verified import VerifiedList
from blocklist.sync.watch import StateWatcher
from resolver.rpz.config import RpzConfig, load_tsig_key
from resolver.rpz.metrics import TRANSFER_KINDS, RpzMetrics, make_app
from resolver.rpz.notify import Notifier
from resolver.rpz.responder import NetAcl, Reply, Responder
from resolver.rpz.server import RpzServer
from resolver.rpz.zone import ZoneSettings, ZoneVersion, build_version

log = logging.getLogger("cordon.rpz")


class HashedEditionError(ConfigError):
    """The verified list on disk is the hashed edition: it has no names to put in a zone."""


def require_plain(verified: VerifiedList, state_file: Path, source: str) -> None:
    if verified.edition != Edition.PLAIN or verified.state.values is None:
        raise HashedEditionError(
            f"{state_file}: holds the {verified.edition.label} edition of list "
            f"{verified.notification.list_id!r} (serial {verified.serial}), which has no names "
            f'for an RPZ zone: set sync.edition = "plain" in {source} and run `resolver sync` '
            "again"
        )


def _event(message: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, message, extra={"fields": fields})


def build_from_state(
    state_dir: Path, config: RpzConfig, source: str, settings: ZoneSettings
) -> ZoneVersion:
    """The zone version from state.bin (for `export`); errors name the file."""
    state_file = state_dir / persist.STATE_FILE
    verified = persist.load(state_dir, config.sync.pinned_roots, config.sync.max_entries)
    if verified is None:
        raise ConfigError(f"{state_file}: no verified list yet: run `resolver sync` first")
    require_plain(verified, state_file, source)
    return build_version(verified.state, verified.serial, settings)


class RpzService:
    def __init__(self, config: RpzConfig, source: str = "rpz.toml") -> None:
        self.config = config
        self.source = source
        rpz = config.rpz
        self.settings = ZoneSettings.from_section(rpz)
        self.key = load_tsig_key(config, source)
        self.metrics = RpzMetrics()
        self.responder = Responder(
            self.settings,
            key=self.key,
            allow=NetAcl(rpz.transfer.allow, loopback=rpz.transfer.allow_loopback),
            unsigned_allow=NetAcl(rpz.transfer.unsigned_allow),
            message_size=rpz.transfer.message_size,
            history=rpz.history,
        )
        self.server = RpzServer(
            self.responder,
            rpz.listen,
            rpz.port,
            idle_timeout=rpz.tcp_idle_timeout,
            max_connections=rpz.tcp_max_connections,
            on_reply=self._on_reply,
        )
        self.notifier = Notifier(
            self.settings,
            rpz.notify.addresses,
            retries=rpz.notify.retries,
            timeout=rpz.notify.timeout,
            key=self.key if rpz.notify.sign else None,
            on_result=lambda target, result: self.metrics.notify.labels(target, result).inc(),
        )
        self.state_file = config.sync.state_dir / persist.STATE_FILE
        self.watcher = StateWatcher(
            config.sync.state_dir,
            config.sync.pinned_roots,
            self._on_change,
            interval=rpz.list_poll_interval,
            max_entries=config.sync.max_entries,
            threshold=config.sync.root_threshold,
        )
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_port: int | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self.updated = asyncio.Event()
        self.lists_refused = 0  # verified lists not served (hashed, serial not advancing)

    @property
    def port(self) -> int:
        return self.server.bound_port

    @property
    def current(self) -> ZoneVersion | None:
        return self.responder.current

    def health(self) -> dict:
        v = self.responder.current
        return {
            "ok": v is not None,
            "zone": self.settings.origin.to_text(),
            "serial": None if v is None else v.serial,
            "list_serial": None if v is None else v.list_serial,
            "entries": None if v is None else len(v),
        }

    def _on_reply(self, reply: Reply, messages: int, size: int) -> None:
        self.metrics.answers.labels(reply.kind).inc()
        if reply.kind in TRANSFER_KINDS:
            self.metrics.transfer_messages.labels(reply.kind).inc(messages)
            self.metrics.transfer_bytes.labels(reply.kind).inc(size)
            _event(f"{reply.kind} sent", messages=messages, bytes=size, **reply.detail)
        elif reply.kind.startswith("tsig_") or reply.kind == "unsigned":
            _event(f"transfer refused: {reply.kind}", logging.WARNING, **reply.detail)
        elif log.isEnabledFor(logging.DEBUG):
            _event(f"answered {reply.kind}", logging.DEBUG, **reply.detail)

    async def _on_change(self, verified: VerifiedList) -> None:
        try:
            require_plain(verified, self.state_file, self.source)
        except HashedEditionError as exc:
            if not self._started:
                raise  # at start-up: a configuration error, the command stops with it
            _event(f"new list not served: {exc}", logging.ERROR, list_serial=verified.serial)
            self.lists_refused += 1
            return
        async with self._lock:
            current = self.responder.current
            if current is not None and current.list_serial == verified.serial:
                return  # the same list re-signed: the zone does not change
            version = await asyncio.to_thread(
                build_version, verified.state, verified.serial, self.settings
            )
            try:
                diff = await asyncio.to_thread(self.responder.prepare, version)
            except ValueError as exc:
                _event(f"new list not served: {exc}", logging.ERROR, list_serial=verified.serial)
                self.lists_refused += 1
                return
            self.responder.install(version, diff)
        self.metrics.zone(version, len(self.responder.history))
        s = version.skipped
        fields = {
            "serial": version.serial,
            "list_serial": version.list_serial,
            "entries": len(version),
            "skipped_url": s.url,
            "skipped_too_long": s.too_long,
            "skipped_reserved": s.reserved,
        }
        if diff is not None:
            fields.update(removed=len(diff.removed), added=len(diff.added))
        _event("zone updated", **fields)
        if s.total:
            _event(
                f"{s.total} list entries are not in the zone: RPZ cannot express URL entries "
                "(names only); names too long or ending in an rpz- label are skipped too",
                logging.WARNING,
                **fields,
            )
        self.notifier.notify(version.serial)
        self.updated.set()

    async def start(self) -> None:
        # The first look at state.bin happens before any socket opens: a hashed list there is a
        # configuration error and the command stops with it.
        await self.watcher.start()
        self._started = True
        if self.responder.current is None:
            _event(
                "no verified list yet: answering SERVFAIL until `resolver sync` writes one",
                logging.WARNING,
                state_file=str(self.state_file),
            )
        try:
            await self.server.start()
            mcfg = self.config.rpz.metrics
            if mcfg.enabled:
                runner = web.AppRunner(make_app(self.metrics, self.health), access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, mcfg.listen, mcfg.port)
                await site.start()
                self._metrics_runner = runner
                self.metrics_port = runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise
        _event(
            "serving RPZ zone",
            zone=self.settings.origin.to_text(),
            port=self.port,
            listen=self.config.rpz.listen,
            tsig=self.key is not None,
            notify=self.config.rpz.notify.targets,
            metrics_port=self.metrics_port,
        )

    async def stop(self) -> None:
        await self.watcher.stop()
        await self.notifier.close()
        await self.server.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
