"""Delivering outbox complaints to the authority, and bringing its decisions back.

Each pending row is POSTed to `/v1/complaints` with the ASP token and the row's idempotency key,
and the person's ticket (T-…) so that someone who writes to the authority quoting it is found
(`blocklist complaints show T-…`). An authority that does not know the `ticket` field yet refuses
it as an unknown key; the complaint is then sent without it, and a warning says so once.
The authority files a key once and answers later attempts with the same complaint, so retrying
after any failure — a timeout, a lost answer, a crash of this process between the authority's
answer and our commit — delivers each complaint exactly once. Failures are retried with
exponential backoff and jitter; the schedule is stored in the row, so it survives restarts.

While some forwarded complaints await a decision, `/v1/complaints?since=` is polled and the
decisions are copied into the outbox for the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable

import aiohttp

from blocklist.crash import checkpoint
from stoppage.outbox import Outbox

log = logging.getLogger("cordon.stoppage.forwarder")

# Answers worth retrying: the authority is down, overloaded, or our token is being fixed.
RETRYABLE = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})
DECISION_OVERLAP = 120  # seconds re-read before the last decision seen (clock skew, late commits)
CURSOR_KEY = "decisions_since"


def _event(message: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, message, extra={"fields": fields})


def backoff(attempts: int, initial: float, maximum: float, rng=random.random) -> float:
    """Delay before attempt `attempts + 1`: exponential, capped, with 'equal jitter'."""
    cap = min(maximum, initial * (2 ** min(attempts, 40)))
    return cap / 2 + rng() * cap / 2


def _error_text(status: int, text: str) -> str:
    """An authority refusal as 'HTTP 422: invalid_body: host': code and field, never values."""
    try:
        data = json.loads(text)
    except ValueError:
        return f"HTTP {status}"
    if not isinstance(data, dict):
        return f"HTTP {status}"
    code = str(data.get("error", ""))[:40]
    field = str(data.get("message", "")).split(":", 1)[0][:60] if code == "invalid_body" else ""
    return ": ".join(p for p in (f"HTTP {status}", code, field) if p)


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        authority_url: str,
        token: Callable[[], str],
        *,
        retry_initial: float,
        retry_max: float,
        request_timeout: float,
        poll_interval: float,
        keep_decided_days: int = 365,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.base = authority_url.rstrip("/")
        self.token = token
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.poll_interval = poll_interval
        self.keep_decided_days = keep_decided_days
        self.on_result = on_result or (lambda _result: None)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._next_poll = 0.0
        self._next_purge = 0.0
        self.last_error: str | None = None
        self.send_ticket = True

    def wake(self) -> None:
        """A complaint was stored: deliver it now rather than at the next scheduled pass."""
        self._wake.set()

    def _headers(self) -> dict[str, str]:
        try:
            token = self.token()
        except OSError as exc:
            _event("cannot read the ASP token", logging.ERROR, error=str(exc))
            token = ""
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _post(self, body: dict) -> tuple[int, dict | None, str]:
        """(status, JSON answer on success, error) of one POST; the error never quotes the body."""
        try:
            async with self.session.post(
                f"{self.base}/v1/complaints", json=body, headers=self._headers()
            ) as resp:
                if resp.status in (200, 201):
                    return resp.status, await resp.json(), ""
                return resp.status, None, _error_text(resp.status, await resp.text())
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return 0, None, f"{type(exc).__name__}: {exc}"[:300]

    async def deliver(self, row: dict) -> str:
        """One attempt at one row; returns 'forwarded', 'retry' or 'undeliverable'."""
        body = {
            "idempotency_key": row["idempotency_key"],
            "entry_id": row["entry_id"],
            "host": row["host"],
            "role": row["role"],
            "reason": row["reason"],
            "contact": row["contact"],
            "language": row["language"],
            "received": row["received"],
        }
        ticket = row["ticket"]
        if self.send_ticket:
            body["ticket"] = ticket
        status, answer, error = await self._post(body)
        if status == 422 and "ticket" in body and error.endswith("invalid_body: ticket"):
            self.send_ticket = False
            _event(
                "the authority does not accept the ticket field yet: complaints are forwarded "
                "without it (quote the complaint id to the authority)",
                logging.WARNING,
            )
            del body["ticket"]
            status, answer, error = await self._post(body)
        if answer is not None and isinstance(answer.get("complaint_id"), str):
            checkpoint("stoppage/forward-answered")
            await self.outbox.mark_forwarded(ticket, answer)
            _event("complaint forwarded", ticket=ticket, complaint=answer["complaint_id"])
            self.last_error = None
            return "forwarded"
        if answer is not None:
            error = "the authority's answer has no complaint_id"
        if status and status not in RETRYABLE and 400 <= status < 500:
            await self.outbox.mark_undeliverable(ticket, error)
            _event("complaint refused by the authority", logging.ERROR, ticket=ticket, error=error)
            return "undeliverable"
        attempts = row["attempts"] + 1
        delay = backoff(row["attempts"], self.retry_initial, self.retry_max)
        await self.outbox.reschedule(ticket, attempts, time.time() + delay, error)
        self.last_error = error
        _event(
            "complaint not delivered yet",
            logging.WARNING,
            ticket=ticket,
            attempts=attempts,
            retry_in=round(delay, 1),
            error=error,
        )
        return "retry"

    async def deliver_due(self) -> int:
        """Deliver every row that is due; returns how many were forwarded."""
        forwarded = 0
        while True:
            rows = await self.outbox.due(time.time())
            if not rows:
                return forwarded
            for row in rows:
                result = await self.deliver(row)
                self.on_result(result)
                forwarded += result == "forwarded"

    async def poll_decisions(self) -> int:
        """Copy decisions made since the last poll into the outbox; returns rows changed."""
        cursor = int(await self.outbox.get_meta(CURSOR_KEY) or 0)
        since = max(0, cursor - DECISION_OVERLAP)
        async with self.session.get(
            f"{self.base}/v1/complaints", params={"since": str(since)}, headers=self._headers()
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=(await resp.text())[:200]
                )
            data = await resp.json()
        items = [
            c
            for c in data.get("complaints", [])
            if isinstance(c, dict) and isinstance(c.get("complaint_id"), str) and c.get("status")
        ]
        changed = await self.outbox.record_decisions(items)
        decided = [c["decided"] for c in items if isinstance(c.get("decided"), int)]
        if decided and max(decided) > cursor:
            await self.outbox.set_meta(CURSOR_KEY, str(max(decided)))
        if changed:
            _event("decisions received", changed=changed)
        return changed

    async def run_once(self) -> None:
        await self.deliver_due()
        now = time.time()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            if await self.outbox.awaiting_decision():
                try:
                    await self.poll_decisions()
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    _event("cannot poll decisions", logging.WARNING, error=str(exc)[:300])
        if now >= self._next_purge:
            self._next_purge = now + 3600
            purged = await self.outbox.purge(int(now) - self.keep_decided_days * 86400)
            if purged:
                _event("old tickets deleted", count=purged)

    async def _sleep(self) -> None:
        now = time.time()
        wake_at = self._next_poll
        due = await self.outbox.next_due()
        if due is not None:
            wake_at = min(wake_at, due)
        delay = min(max(0.0, wake_at - now), 60.0)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation that
        # arrives as its timeout fires, and stop() would then wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("complaint forwarder failed; retrying")
                await asyncio.sleep(1)
            await self._sleep()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
