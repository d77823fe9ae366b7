"""What the stop page counts: notices shown per list entry per hour, and nothing about visitors.

Counts are kept in memory for `keep_hours`, exported as Prometheus metrics on the local metrics
port, and optionally written to `counters.json` — entry ids, hours and numbers only.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from blocklist.sync.verified import write_atomic

log = logging.getLogger("cordon.stoppage.counters")
COUNTERS_FILE = "counters.json"


class HourlyCounters:
    def __init__(self, keep_hours: int, path: Path | None = None) -> None:
        self.keep_hours = keep_hours
        self.path = path
        self.hours: dict[int, dict[int, int]] = {}
        self.dirty = False
        if path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
            for hour, counts in data.get("hours", {}).items():
                self.hours[int(hour)] = {int(k): int(v) for k, v in counts.items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.error("cannot read %s; counting from zero: %s", self.path, exc)
            self.hours = {}
        self.prune()

    def hit(self, entry_id: int, now: float | None = None) -> None:
        hour = int((time.time() if now is None else now) // 3600) * 3600
        counts = self.hours.get(hour)
        if counts is None:
            counts = self.hours[hour] = {}
            self.prune(hour)
        counts[entry_id] = counts.get(entry_id, 0) + 1
        self.dirty = True

    def prune(self, current_hour: int | None = None) -> None:
        if current_hour is None:
            current_hour = int(time.time() // 3600) * 3600
        oldest = current_hour - (self.keep_hours - 1) * 3600
        for hour in [h for h in self.hours if h < oldest]:
            del self.hours[hour]

    def snapshot(self) -> dict:
        return {
            "version": 1,
            "hours": {
                str(h): {str(k): v for k, v in sorted(c.items())}
                for h, c in sorted(self.hours.items())
            },
        }

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        data = json.dumps(self.snapshot(), separators=(",", ":")).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, [data])
        self.dirty = False


class StopPageMetrics:
    P = "cordon_stoppage_"

    def __init__(self, registry: CollectorRegistry, max_entry_labels: int) -> None:
        p = self.P
        self.registry = registry
        self.max_entry_labels = max_entry_labels
        self._children: dict[int, object] = {}  # entry id -> its labelled counter
        self.blocked = Counter(
            p + "blocked",
            "Blocking notices shown, by list entry id ('other' past max_entry_labels ids)",
            ["entry"],
            registry=registry,
        )
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
        child = self._children.get(entry_id)
        if child is None:
            if len(self._children) >= self.max_entry_labels:
                self.blocked.labels("other").inc()
                return
            child = self._children[entry_id] = self.blocked.labels(str(entry_id))
        child.inc()  # type: ignore[attr-defined]
