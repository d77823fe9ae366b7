"""One resolver worker: the list watcher, the resolver, its listeners, and (alone) its metrics.

The list is loaded before the sockets open, so a listed name is never forwarded at start-up.
Every new `state.bin` written by `resolver sync` is re-verified and decoded off the event loop
by `StateWatcher`; the matcher and the blocked answers are then built in a thread too, and the
swap is one reference assignment: answering never pauses for a list update.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import ipaddress
import logging
import time
from typing import Any

import aiohttp

from blocklist.sync.verified import VerifiedList
from blocklist.sync.watch import StateWatcher
from resolver import fastpath
from resolver.acl import Acl
from resolver.check import check_name
from resolver.config import BlockingSection, ResolverConfig, UrlProxySection
from resolver.control import add_routes
from resolver.divert import Diversion, protected_digests, urlhost_digests
from resolver.dnswire import BlockedAnswers, SoaParams
from resolver.encrypted import EncryptedListeners
from resolver.engine import Resolver
from resolver.exemptions import Exemptions
from resolver.matcher import Matcher
from resolver.metrics import make_app, start_http
from resolver.server import Listeners
from resolver.stats import Stats, merge
from resolver.upstream import upstream_names

log = logging.getLogger("cordon.resolver")


def _malloc_trim() -> None:
    """Hand the heap freed by the previous list back to the OS (glibc only; no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def make_answers(blocking: BlockingSection, authority: str, serial: int) -> BlockedAnswers:
    """The precomputed answers for listed names under the list of `serial`."""
    soa = SoaParams(
        blocking.soa_mname,
        blocking.soa_rname,
        serial & 0xFFFFFFFF,
        3600,
        600,
        86400,
        blocking.ttl,
    )
    return BlockedAnswers(
        ipaddress.IPv4Address(blocking.ipv4).packed if blocking.ipv4 else None,
        ipaddress.IPv6Address(blocking.ipv6).packed if blocking.ipv6 else None,
        blocking.ttl,
        soa,
        blocking.text(authority),
    )


def make_divert_answers(proxy: UrlProxySection, blocking: BlockingSection) -> BlockedAnswers:
    """The answers sending a URLHOST name to the URL proxy (A, AAAA; NODATA otherwise)."""
    soa = SoaParams(blocking.soa_mname, blocking.soa_rname, 1, 3600, 600, 86400, proxy.ttl)
    return BlockedAnswers(
        ipaddress.IPv4Address(proxy.ipv4).packed if proxy.ipv4 else None,
        ipaddress.IPv6Address(proxy.ipv6).packed if proxy.ipv6 else None,
        proxy.ttl,
        soa,
        b"Served through the URL filter proxy",
    )


def build_list(
    blocking: BlockingSection, verified: VerifiedList, fast: bool = False
) -> tuple[Matcher, BlockedAnswers]:
    """The lookup index (the C one on the fast path: a bucket table, no copy) and answers."""
    if fast:
        matcher = fastpath.list_index(verified.state)
    else:
        matcher = Matcher(verified.state, verified.serial)
    return matcher, make_answers(blocking, verified.notification.authority, verified.serial)


class ResolverService:
    def __init__(self, config: ResolverConfig, *, metrics: bool = True) -> None:
        if not config.upstream.servers:
            raise ValueError("upstream.servers: set at least one recursive resolver")
        self.config = config
        self.stats = Stats(upstream_names(config.upstream), config.metrics.max_entry_labels)
        self.resolver = Resolver(config, self.stats, make_answers(config.blocking, "", 0))
        self.acl = Acl(config.acl.allow, config.acl.allow_loopback)
        self.listeners = Listeners(self.resolver, self.acl, config)
        self.encrypted = EncryptedListeners(self.resolver, self.acl, config)
        self.watcher = StateWatcher(
            config.sync.state_dir,
            config.sync.pinned_roots,
            self._on_list,
            interval=config.server.list_poll_interval,
            max_entries=config.sync.max_entries,
            threshold=config.sync.root_threshold,
        )
        self.with_metrics = metrics and config.metrics.enabled
        self._runner = None
        self.metrics_port: int | None = None
        self.swapped = asyncio.Event()
        # URL proxy diversion: the list's URLHOST digests and the proxy's last health result.
        proxy = config.url_proxy
        self._urlhosts: frozenset[bytes] = frozenset()
        self._proxy_up = False
        self._protected = protected_digests(config.rails.protected_names)
        self._divert_answers = make_divert_answers(proxy, config.blocking) if proxy else None
        self._health_task: asyncio.Task | None = None
        self.divert_changed = asyncio.Event()  # set after every change of diverting on/off

    def _update_divert(self) -> None:
        """Divert URLHOST names only while the proxy is up and the list is within the cap."""
        proxy = self.config.url_proxy
        if proxy is None or self._divert_answers is None:
            return
        hosts = self._urlhosts
        s = self.stats
        over = len(hosts) > proxy.max_hosts
        if over and not s.divert_over_cap:
            log.error(
                "the list has %d URLHOST entries, more than url_proxy.max_hosts = %d: "
                "no host is diverted to the URL proxy until this is resolved",
                len(hosts),
                proxy.max_hosts,
            )
        s.divert_over_cap = int(over)
        s.divert_hosts = len(hosts)
        s.divert_proxy_up = int(self._proxy_up)
        active = self._proxy_up and bool(hosts) and not over
        current = self.resolver.lists.divert
        if not active:
            new = None
        elif current is not None and current.hosts is hosts:
            return
        else:
            new = Diversion(hosts, self._protected, self._divert_answers)
        if new is None and current is None:
            return
        self.resolver.set_divert(new)
        s.divert_active = int(new is not None)
        log.info(
            "URL proxy diversion %s",
            "on" if new is not None else "off",
            extra={"fields": {"hosts": len(hosts), "proxy_up": self._proxy_up, "over_cap": over}},
        )
        self.divert_changed.set()

    async def _probe_health(self) -> None:
        proxy = self.config.url_proxy
        assert proxy is not None
        timeout = aiohttp.ClientTimeout(total=proxy.health_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(proxy.health_url, allow_redirects=False) as resp:
                        up = resp.status == 200
                except (aiohttp.ClientError, TimeoutError, OSError):
                    up = False
                if up != self._proxy_up:
                    (log.info if up else log.warning)(
                        "URL proxy health check %s: %s",
                        "passes" if up else "fails",
                        proxy.health_url,
                    )
                    self._proxy_up = up
                    self._update_divert()
                await asyncio.sleep(proxy.health_interval)

    async def _on_list(self, verified: VerifiedList) -> None:
        started = time.perf_counter()
        fast = self.resolver.fast is not None
        matcher, answers = await asyncio.to_thread(build_list, self.config.blocking, verified, fast)
        exemptions = Exemptions(self.config.blocking.exempt_names, verified.state)
        self.resolver.set_list(matcher, answers, verified.serial, exemptions)
        del matcher, answers
        if self.config.url_proxy is not None:
            self._urlhosts = await asyncio.to_thread(urlhost_digests, verified.state)
            self._update_divert()
        await asyncio.to_thread(_malloc_trim)  # ctypes releases the GIL meanwhile
        s = self.stats
        s.list_serial = verified.serial
        lists = self.resolver.lists
        s.list_entries = len(lists.matcher)
        s.list_domains = lists.matcher.domains
        s.list_verified_at = verified.verified_at
        s.list_expires = verified.expires
        s.list_swaps += 1
        s.list_last_swap_seconds = time.perf_counter() - started
        log.info(
            "list in force",
            extra={
                "fields": {
                    "serial": verified.serial,
                    "entries": s.list_entries,
                    "build_seconds": round(s.list_last_swap_seconds, 3),
                }
            },
        )
        self.swapped.set()

    def _log_path(self) -> None:
        if self.resolver.fast is not None:
            log.info("UDP fast path: compiled C extension (resolver._fastpath)")
        elif not self.config.server.fast_path:
            log.warning("UDP fast path off (server.fast_path = false): pure-Python path")
        else:
            log.warning(
                "UDP fast path unavailable, running the slower pure-Python path: %s. "
                "Install gcc and the Python headers (python3-dev) and reinstall.",
                fastpath.UNAVAILABLE,
            )

    async def start(self, port: int | None = None, adopt: ResolverService | None = None) -> None:
        """Load the list, then open the listeners (with `adopt`: take over its sockets)."""
        self._log_path()
        await self.watcher.start()
        if self.resolver.lists.serial is None:
            log.error(
                "no verified list in %s: %s until `resolver sync` writes one",
                self.config.sync.state_dir,
                "forwarding every query"
                if self.config.server.without_list == "forward"
                else "answering SERVFAIL",
            )
        if self.config.url_proxy is not None:
            self._health_task = asyncio.create_task(self._probe_health())
        try:
            await self.listeners.start(port, adopt.listeners if adopt is not None else None)
            await self.encrypted.start(adopt.encrypted if adopt is not None else None)
            if self.with_metrics:
                m = self.config.metrics
                app = make_app(self.snapshot, self.config.sync.state_dir)
                add_routes(app, self.check, self.local, self.snapshot, self.config.sync.state_dir)
                self._runner, self.metrics_port = await start_http(app, m.listen, m.port)
        except BaseException:
            await self.stop()
            raise

    def check_now(self, name: str) -> dict[str, Any]:
        """`resolver check NAME` against this worker's list in force (raises BadName)."""
        c = self.config
        verdict = check_name(name, self.resolver.lists, c.rails.protected_names, c.blocking.mode)
        # Where it is forwarded when it is answered: a zone of upstream.zones, or the default.
        verdict["zone"] = self.resolver.router.zone_of(verdict["name"].encode())
        return verdict

    def local_facts(self) -> dict[str, Any]:
        """What `resolver status` shows beyond counters: this worker's mode and exemptions."""
        report = self.resolver.lists.exemptions.report()
        return {"mode": self.config.blocking.mode, "exemptions": report}

    async def check(self, name: str) -> dict[str, Any]:
        return self.check_now(name)

    async def local(self) -> dict[str, Any]:
        return self.local_facts()

    async def snapshot(self) -> dict[str, Any]:
        return merge([self.stats.snapshot()])

    @property
    def port(self) -> int:
        return self.listeners.addresses[0][1]

    async def retire(self) -> None:
        """Replaced by a reload: finish what is in flight (bounded by the upstream timeouts),
        then close. The sockets a new service adopted stay open there."""
        u = self.config.upstream
        attempts = u.attempts or max(1, len(u.servers))
        await self.watcher.stop()
        timeout = u.timeout * attempts + u.tcp_timeout
        await asyncio.gather(self.listeners.retire(timeout), self.encrypted.retire(timeout))
        await self.stop()

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        await self.watcher.stop()
        await self.listeners.stop()
        await self.encrypted.stop()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
