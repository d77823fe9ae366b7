"""NOTIFY (RFC 1996) to the secondaries after each new serial, repeated until acknowledged.

A NOTIFY only says "the SOA changed"; the secondary then checks the SOA and transfers over its
own (TSIG-signed) channel, so an unsigned NOTIFY is safe. A newer serial supersedes a NOTIFY
still being retried for an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig

from resolver.rpz.zone import ZoneSettings

log = logging.getLogger("cordon.rpz.notify")


def notify_message(
    settings: ZoneSettings, serial: int, key: dns.tsig.Key | None = None
) -> dns.message.Message:
    """A NOTIFY for the zone, with the new SOA in the answer section (RFC 1996 §3.7)."""
    msg = dns.message.make_query(settings.origin, dns.rdatatype.SOA)
    msg.flags = dns.flags.AA  # no RD; set before the opcode, which lives in the same field
    msg.set_opcode(dns.opcode.NOTIFY)
    msg.answer.append(
        dns.rrset.from_rdata(settings.origin, settings.soa_ttl, settings.soa_rdata(serial))
    )
    if key is not None:
        msg.use_tsig(key)
    return msg


class Notifier:
    def __init__(
        self,
        settings: ZoneSettings,
        targets: list[tuple[str, int]],
        *,
        retries: int = 5,
        timeout: float = 2.0,
        key: dns.tsig.Key | None = None,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.retries = retries
        self.timeout = timeout
        self.key = key
        self.on_result = on_result or (lambda target, result: None)
        self._tasks: dict[tuple[str, int], asyncio.Task] = {}

    def notify(self, serial: int) -> None:
        for target in self.targets:
            old = self._tasks.pop(target, None)
            if old is not None:
                old.cancel()
            self._tasks[target] = asyncio.create_task(self._send(target, serial))

    async def _send(self, target: tuple[str, int], serial: int) -> str:
        host, port = target
        where = f"{host}:{port}"
        wait = self.timeout
        for attempt in range(1, self.retries + 2):
            msg = notify_message(self.settings, serial, self.key)
            try:
                reply = await dns.asyncquery.udp(msg, host, timeout=wait, port=port)
            except (TimeoutError, dns.exception.Timeout):
                log.info(
                    "no answer to NOTIFY",
                    extra={"fields": {"target": where, "serial": serial, "attempt": attempt}},
                )
                wait *= 2
                continue
            except (OSError, dns.exception.DNSException) as exc:
                log.warning(
                    "NOTIFY failed",
                    extra={"fields": {"target": where, "serial": serial, "error": str(exc)}},
                )
                await asyncio.sleep(wait)
                wait *= 2
                continue
            rcode = reply.rcode()
            if rcode == dns.rcode.SERVFAIL:
                # Transient on the secondary's side (Unbound says so while it has no copy yet).
                log.info(
                    "NOTIFY answered SERVFAIL; trying again",
                    extra={"fields": {"target": where, "serial": serial, "attempt": attempt}},
                )
                await asyncio.sleep(wait)
                wait *= 2
                continue
            if rcode == dns.rcode.NOERROR:
                log.info(
                    "NOTIFY acknowledged",
                    extra={"fields": {"target": where, "serial": serial, "attempt": attempt}},
                )
                self.on_result(where, "acked")
                return "acked"
            # A refusal is an answer: sending it again will not change the secondary's mind.
            log.error(
                "secondary refused NOTIFY: check its allow-notify / primaries",
                extra={
                    "fields": {"target": where, "serial": serial, "rcode": dns.rcode.to_text(rcode)}
                },
            )
            self.on_result(where, "refused")
            return "refused"
        log.error(
            "secondary never acknowledged NOTIFY; it will find the new serial at its SOA refresh",
            extra={"fields": {"target": where, "serial": serial, "attempts": self.retries + 1}},
        )
        self.on_result(where, "unanswered")
        return "unanswered"

    async def wait(self) -> None:
        """Until every pending NOTIFY is acknowledged or given up (for tests and shutdown)."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
