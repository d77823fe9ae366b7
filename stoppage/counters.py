"""What the stop page counts: notices shown per list entry per hour, and nothing about visitors.

Counts are kept in memory for `keep_hours`, exported on the local metrics port, and optionally
written to `counters.json` — entry ids, hours and numbers only.

Memory is bounded whatever the traffic: each hour counts at most `max_entries` distinct entry
ids; notices for further ids that hour add to the hour's "other" count. So a 1M-entry list hit
at random costs at most keep_hours x max_entries counters, never one per entry.

Serving must never stall visitors: a finished hour never changes, so its JSON is built once and
kept; only the current hour is serialised per request, and it is bounded by `max_entries`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from blocklist.sync.verified import write_atomic

log = logging.getLogger("cordon.stoppage.counters")
COUNTERS_FILE = "counters.json"
OTHER = "other"


def bump(counts: dict, key: object, cap: int) -> bool:
    """Add one to `counts[key]`; False (nothing added) when `key` is new and `cap` keys exist."""
    n = counts.get(key)
    if n is not None:
        counts[key] = n + 1
    elif len(counts) < cap:
        counts[key] = 1
    else:
        return False
    return True


class HourlyCounters:
    def __init__(
        self, keep_hours: int, path: Path | None = None, max_entries: int = 10_000
    ) -> None:
        self.keep_hours = keep_hours
        self.path = path
        self.max_entries = max_entries
        self.hours: dict[int, dict[int, int]] = {}
        self.other: dict[int, int] = {}  # hour -> notices past max_entries distinct ids
        self._hour = -1
        self._counts: dict[int, int] = {}
        self._frozen: dict[int, bytes] = {}  # finished hours, serialised once
        self.dirty = False
        if path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
            for hour, counts in data.get("hours", {}).items():
                h = int(hour)
                self.hours[h] = {}
                for k, v in counts.items():
                    if k == OTHER:
                        self.other[h] = int(v)
                    elif len(self.hours[h]) < self.max_entries:
                        self.hours[h][int(k)] = int(v)
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.error("cannot read %s; counting from zero: %s", self.path, exc)
            self.hours = {}
            self.other = {}
        self.prune()

    def hit(self, entry_id: int, now: float | None = None) -> None:
        hour = int((time.time() if now is None else now) // 3600) * 3600
        if hour != self._hour:
            self._switch(hour)
        if not bump(self._counts, entry_id, self.max_entries):
            self.other[hour] = self.other.get(hour, 0) + 1
        self.dirty = True

    def _switch(self, hour: int) -> None:
        self._hour = hour
        counts = self.hours.get(hour)
        if counts is None:
            counts = self.hours[hour] = {}
            self.prune(hour)
        self._counts = counts

    def prune(self, current_hour: int | None = None) -> None:
        if current_hour is None:
            current_hour = int(time.time() // 3600) * 3600
        oldest = current_hour - (self.keep_hours - 1) * 3600
        for hour in [h for h in self.hours if h < oldest]:
            del self.hours[hour]
            self.other.pop(hour, None)
            self._frozen.pop(hour, None)

    def _hour_json(self, hour: int, current: int) -> bytes:
        frozen = self._frozen.get(hour)
        if frozen is not None:
            return frozen
        counts: dict[str, int] = {str(k): v for k, v in sorted(self.hours[hour].items())}
        if self.other.get(hour):
            counts[OTHER] = self.other[hour]
        data = json.dumps(counts, separators=(",", ":")).encode()
        if hour < current:
            self._frozen[hour] = data
        return data

    def chunks(self, now: float | None = None) -> Iterator[bytes]:
        """The snapshot as JSON, one hour per chunk (so a server can yield between chunks)."""
        current = int((time.time() if now is None else now) // 3600) * 3600
        yield b'{"version":1,"hours":{'
        sep = b""
        for hour in sorted(self.hours):
            if hour in self.hours:  # pruned while the caller was writing an earlier chunk
                yield sep + f'"{hour}":'.encode() + self._hour_json(hour, current)
                sep = b","
        yield b"}}"

    def snapshot(self) -> dict:
        return json.loads(b"".join(self.chunks()))

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        data = b"".join(self.chunks())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, [data])
        self.dirty = False


class _EntryCounts(Collector):
    """cordon_stoppage_blocked_total from plain ints: no lock or object per entry per notice."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.help, labels=["entry"])
        for entry, n in list(self.counts.items()):
            family.add_metric([entry], n)
        yield family


class StopPageMetrics:
    P = "cordon_stoppage_"

    def __init__(self, registry: CollectorRegistry, max_entry_labels: int) -> None:
        p = self.P
        self.registry = registry
        self.max_entry_labels = max_entry_labels
        self.blocked = _EntryCounts(
            p + "blocked",
            "Blocking notices shown, by list entry id ('other' past max_entry_labels ids)",
        )
        registry.register(self.blocked)
        self.pages = Counter(p + "pages", "Pages served, by kind", ["page"], registry=registry)
        self.blocked_pages = self.pages.labels("blocked")
        self.neutral_pages = self.pages.labels("neutral")
        self.complaints = Counter(
            p + "complaint_submissions",
            "Complaint form submissions, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.forwarding = Counter(
            p + "forward_attempts",
            "Attempts to deliver a complaint to the authority, by result",
            ["result"],
            registry=registry,
        )
        self.outbox = Gauge(
            p + "outbox", "Complaints in the outbox, by state", ["state"], registry=registry
        )
        self.list_serial = Gauge(
            p + "list_serial", "Serial of the list in force", registry=registry
        )
        self.list_entries = Gauge(
            p + "list_entries", "Entries in the list in force", registry=registry
        )
        self.list_loaded = Gauge(
            p + "list_loaded", "1 when a verified list is in force", registry=registry
        )

    def blocked_hit(self, entry_id: int) -> None:
        counts = self.blocked.counts
        if not bump(counts, str(entry_id), self.max_entry_labels):
            counts[OTHER] = counts.get(OTHER, 0) + 1
