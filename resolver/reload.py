"""Reload on SIGHUP: the configuration re-read, the service replaced without a failed query.

The file is read and validated first; an invalid one (or a change that needs a restart: the
number of workers, the metrics address) keeps the running configuration and says why in the
log. Then:

- one process (`server.workers = 1`): a new service is built beside the running one (list
  loaded and indexed), takes over its sockets (duplicated descriptors, so nothing waiting in
  the kernel is lost) in one step of the event loop, and the old one finishes the queries it
  has in flight before it closes. The metrics and control routes follow the new service.
- several workers: the supervisor replaces them one by one: a new worker with the new
  configuration binds the port beside the old ones (SO_REUSEPORT), reports ready, then the old
  one stops reading, finishes what is in flight and exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from blocklist.config import ConfigError
from resolver.config import ResolverConfig
from resolver.service import ResolverService

log = logging.getLogger("cordon.resolver")

ConfigSource = Callable[[], ResolverConfig]  # raises ConfigError


def restart_needed(old: ResolverConfig, new: ResolverConfig) -> str | None:
    """Why `new` cannot be applied by a reload, or None."""
    if new.server.workers != old.server.workers:
        return (
            f"server.workers changed ({old.server.workers} -> {new.server.workers}): "
            "restart to change the number of workers"
        )
    if (new.metrics.enabled, new.metrics.listen, new.metrics.port) != (
        old.metrics.enabled,
        old.metrics.listen,
        old.metrics.port,
    ):
        return "[metrics] changed: restart to move the metrics and control endpoint"
    return None


def read_new_config(source: ConfigSource, running: ResolverConfig) -> ResolverConfig | None:
    """The configuration to reload to, or None (logged: the running one stays)."""
    try:
        new = source()
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return None
    except OSError as exc:
        log.error("reload refused, keeping the running configuration: cannot read it: %s", exc)
        return None
    reason = restart_needed(running, new)
    if reason is not None:
        log.error("reload refused, keeping the running configuration: %s", reason)
        return None
    return new


class SingleProcess:
    """`resolver serve` with one process: the running service, replaced in place on reload."""

    def __init__(self, config: ResolverConfig, source: ConfigSource | None) -> None:
        self.config = config
        self.source = source
        self.service = ResolverService(config, metrics=False)
        self.lock = asyncio.Lock()
        self.reloads = 0

    async def snapshot(self) -> dict[str, Any]:
        return await self.service.snapshot()

    async def check(self, name: str) -> dict[str, Any]:
        return await self.service.check(name)

    async def local(self) -> dict[str, Any]:
        return await self.service.local()

    async def reload(self) -> bool:
        """Apply the file's configuration now; False when it was refused (and why is logged)."""
        async with self.lock:
            if self.source is None:
                return False
            new = read_new_config(self.source, self.config)
            if new is None:
                return False
            old = self.service
            fresh = ResolverService(new, metrics=False)
            same_port = new.server.port == self.config.server.port
            try:
                await fresh.start(old.port if same_port else new.server.port, adopt=old)
            except Exception as exc:
                log.error("reload failed, keeping the running configuration: %s", exc)
                await fresh.stop()
                old.listeners.resume()
                return False
            self.service, self.config = fresh, new
            self.reloads += 1
            log.info("configuration reloaded", extra={"fields": {"reloads": self.reloads}})
        await old.retire()
        return True
