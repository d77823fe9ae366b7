"""Prometheus metrics of the RPZ primary, and /metrics + /healthz on a local-only HTTP port."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from resolver.rpz.zone import ZoneVersion

P = "cordon_rpz_"
TRANSFER_KINDS = ("axfr", "ixfr", "ixfr_full")


class RpzMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.zone_serial = Gauge(P + "zone_serial", "SOA serial of the zone served", registry=r)
        self.list_serial = Gauge(
            P + "list_serial", "List serial the zone is built from", registry=r
        )
        self.entries = Gauge(P + "zone_entries", "Domain entries in the zone", registry=r)
        self.skipped = Gauge(
            P + "skipped_entries",
            "List entries not expressible in RPZ, by reason (url, too_long, reserved)",
            ["reason"],
            registry=r,
        )
        self.history = Gauge(P + "history_diffs", "Serial diffs kept for IXFR", registry=r)
        self.updated = Gauge(
            P + "zone_updated_timestamp_seconds", "When the zone last changed", registry=r
        )
        self.answers = Counter(P + "answers", "Answers by kind", ["kind"], registry=r)
        self.transfer_messages = Counter(
            P + "transfer_messages", "Transfer messages sent", ["kind"], registry=r
        )
        self.transfer_bytes = Counter(
            P + "transfer_bytes", "Transfer bytes sent", ["kind"], registry=r
        )
        self.notify = Counter(
            P + "notify", "NOTIFY outcomes by secondary", ["target", "result"], registry=r
        )
        for reason in ("url", "too_long", "reserved"):
            self.skipped.labels(reason)
        for kind in TRANSFER_KINDS:  # zero until the first one: a series to watch from the start
            self.answers.labels(kind)

    def zone(self, version: ZoneVersion, history: int) -> None:
        self.zone_serial.set(version.serial)
        self.list_serial.set(version.list_serial)
        self.entries.set(len(version))
        self.skipped.labels("url").set(version.skipped.url)
        self.skipped.labels("too_long").set(version.skipped.too_long)
        self.skipped.labels("reserved").set(version.skipped.reserved)
        self.skipped.labels("hashed_only").set(version.skipped.hashed_only)
        self.history.set(history)
        self.updated.set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)


def make_app(metrics: RpzMetrics, health: Callable[[], dict]) -> web.Application:
    async def get_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    async def get_health(request: web.Request) -> web.Response:
        state = health()
        return web.Response(
            text=json.dumps(state),
            status=200 if state["ok"] else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    return app
