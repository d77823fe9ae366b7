"""Prometheus metrics and /healthz on a separate, local-only HTTP port (aiohttp).

Nothing here runs per query: a scrape asks for the workers' counter snapshots (`resolver.stats`),
adds them up, reads the sync follower's status.json (held updates, alarms), and renders the text
format through prometheus_client metric families.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from blocklist.sync.follower import STATUS_FILE
from resolver.stats import LATENCY_BUCKETS

SnapshotSource = Callable[[], Awaitable[dict[str, Any]]]
P = "cordon_resolver_"


def read_sync_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def families(snap: dict[str, Any], status: dict[str, Any] | None, now: float) -> list:
    out: list = []

    def counter(name: str, doc: str, value: float) -> None:
        out.append(CounterMetricFamily(P + name, doc, value=value))

    def gauge(name: str, doc: str, value: float) -> None:
        out.append(GaugeMetricFamily(P + name, doc, value=value))

    q = CounterMetricFamily(P + "queries", "Client queries by outcome", labels=["outcome"])
    for outcome, value in snap.get("outcomes", {}).items():
        q.add_metric([outcome], value)
    out.append(q)
    t = CounterMetricFamily(P + "requests", "Client messages by transport", labels=["transport"])
    for transport, value in snap.get("transport", {}).items():
        t.add_metric([transport], value)
    out.append(t)
    b = CounterMetricFamily(
        P + "blocked_by_entry",
        "Blocked queries by list entry id ('other' past metrics.max_entry_labels ids)",
        labels=["entry"],
    )
    for entry, value in sorted(snap.get("blocked_by_entry", {}).items()):
        b.add_metric([entry], value)
    if snap.get("blocked_other"):
        b.add_metric(["other"], snap["blocked_other"])
    out.append(b)
    counter("truncated", "UDP answers sent truncated (TC=1)", snap.get("truncated", 0))
    counter("cache_hits", "Queries answered from the cache", snap.get("cache_hits", 0))
    counter("cache_misses", "Queries that had to be forwarded", snap.get("cache_misses", 0))
    counter("cache_evictions", "Cache entries evicted for room", snap.get("cache_evictions", 0))
    gauge("cache_entries", "Entries in the cache", snap.get("cache_entries", 0))
    gauge("cache_bytes", "Approximate bytes held by the cache", snap.get("cache_bytes", 0))
    counter("coalesced", "Queries that joined an identical one in flight", snap.get("coalesced", 0))
    rl = CounterMetricFamily(
        P + "ratelimited",
        "Queries over a client's rate limit, by action (UDP drop or slip; TCP counts as drop)",
        labels=["action"],
    )
    for action, value in snap.get("ratelimited", {}).items():
        rl.add_metric([action], value)
    out.append(rl)
    px = CounterMetricFamily(
        P + "proxy_headers_rejected",
        "PROXY v2: headers from untrusted senders (refused), trusted senders' bad headers (error)",
        labels=["reason"],
    )
    for reason, value in snap.get("proxy", {}).items():
        px.add_metric([reason], value)
    out.append(px)
    counter(
        "stale_answers",
        "Expired answers served because every upstream failed (RFC 8767)",
        snap.get("stale_answers", 0),
    )
    lo = CounterMetricFamily(
        P + "log_only_by_entry",
        "Log-only mode: queries answered that the entry would have blocked ('other' past "
        "metrics.max_entry_labels ids)",
        labels=["entry"],
    )
    for entry, value in sorted(snap.get("logged_by_entry", {}).items()):
        lo.add_metric([entry], value)
    if snap.get("logged_other"):
        lo.add_metric(["other"], snap["logged_other"])
    out.append(lo)
    gauge("pending", "Client queries waiting for an upstream", snap.get("pending", 0))
    streams = snap.get("streams", {})
    tcp = streams.get("tcp", {})
    counter("tcp_connections", "TCP connections accepted", tcp.get("connections", 0))
    counter("tcp_rejected", "TCP connections over the limit", tcp.get("rejected", 0))
    counter("tcp_timeouts", "TCP connections closed idle", tcp.get("timeouts", 0))
    counter("tcp_framing_errors", "TCP connections closed for bad framing", tcp.get("errors", 0))
    for name, key, doc in (
        ("encrypted_connections", "connections", "DoT/DoH connections accepted (TLS done)"),
        ("encrypted_rejected", "rejected", "DoT/DoH connections over max_connections"),
        ("encrypted_timeouts", "timeouts", "DoT/DoH connections closed idle"),
        ("encrypted_errors", "errors", "DoT/DoH connections closed for a protocol error"),
        ("tls_without_sni", "no_sni", "TLS handshakes that named no server (SNI)"),
    ):
        fam = CounterMetricFamily(P + name, doc, labels=["transport"])
        for transport in ("dot", "doh"):
            fam.add_metric([transport], streams.get(transport, {}).get(key, 0))
        out.append(fam)
    he = CounterMetricFamily(
        P + "doh_http_errors", "DoH requests refused with an HTTP error", labels=["status"]
    )
    for status, value in sorted(snap.get("doh_status", {}).items()):
        he.add_metric([status], value)
    out.append(he)
    counter(
        "doh_canary",
        "use-application-dns.net queries answered NXDOMAIN (browsers keep this resolver)",
        snap.get("canary", 0),
    )
    if snap.get("tls_expiry"):
        gauge(
            "tls_certificate_expiry_timestamp_seconds",
            "When the DoT/DoH certificate expires (Unix time)",
            snap["tls_expiry"],
        )
    counter(
        "internal_errors", "Unexpected errors caught in handlers", snap.get("internal_errors", 0)
    )

    ups = snap.get("upstreams", {})
    uq = CounterMetricFamily(P + "upstream_queries", "Upstream attempts", labels=["upstream"])
    ue = CounterMetricFamily(
        P + "upstream_errors", "Failed upstream attempts by kind", labels=["upstream", "kind"]
    )
    uu = GaugeMetricFamily(
        P + "upstream_up", "0 while an upstream is skipped after failures", labels=["upstream"]
    )
    ul = HistogramMetricFamily(
        P + "upstream_latency_seconds", "Upstream answer latency", labels=["upstream"]
    )
    for name, u in ups.items():
        uq.add_metric([name], u["queries"])
        for kind, value in u["errors"].items():
            ue.add_metric([name, kind], value)
        uu.add_metric([name], u["up"])
        cumulative = 0
        buckets = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), u["buckets"], strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        ul.add_metric([name], buckets, u["latency_sum"])
    out += [uq, ue, uu, ul]

    lst = snap.get("list", {})
    loaded = lst.get("serial") is not None
    gauge("list_loaded", "1 when every worker enforces a verified list", 1 if loaded else 0)
    if loaded:
        gauge("list_serial", "Serial of the list in force (oldest across workers)", lst["serial"])
        gauge("list_entries", "Entries in the list in force", lst["entries"])
        gauge("list_domain_entries", "Domain entries matched by DNS", lst["domains"])
        gauge(
            "list_age_seconds",
            "Seconds since the list in force was verified",
            max(0.0, now - lst["verified_at"]),
        )
        gauge(
            "list_expires_timestamp_seconds",
            "When the notification in force expires",
            lst["expires"],
        )
    counter("list_swaps", "Lists swapped in", lst.get("swaps", 0))
    gauge(
        "list_swap_seconds",
        "Time to build and swap in the last list (off the event loop)",
        lst.get("last_swap_seconds", 0.0),
    )
    div = snap.get("divert", {})
    counter("diverted", "Answers sending a URLHOST name to the URL proxy", div.get("answers", 0))
    gauge("divert_hosts", "URLHOST entries in force, summed over workers", div.get("hosts", 0))
    gauge("divert_proxy_up", "Workers whose URL proxy health check passes", div.get("proxy_up", 0))
    gauge("divert_active", "Workers diverting URLHOST names to the URL proxy", div.get("active", 0))
    gauge(
        "divert_over_cap",
        "Workers not diverting because the list has more URLHOST entries than url_proxy.max_hosts",
        div.get("over_cap", 0),
    )
    gauge("workers", "Worker processes answering", snap.get("workers", 1))
    gauge(
        "fast_path_workers",
        "Workers answering UDP in the compiled C fast path (the rest run pure Python)",
        snap.get("fast_path", 0),
    )
    gauge("workers_with_list", "Workers enforcing a list", snap.get("workers_with_list", 0))
    gauge("rss_bytes", "Resident memory of all worker processes", snap.get("rss_bytes", 0))

    held = GaugeMetricFamily(P + "sync_held", "1 while the rails hold an update (sync status)")
    alarm = GaugeMetricFamily(
        P + "sync_alarm", "1 while the sync follower raises an alarm", labels=["alarm"]
    )
    if status is not None:
        held.add_metric([], 1 if status.get("held") else 0)
        alarms = status.get("alarms") or {}
        for name in sorted({"no_list", "frozen", "stale", *alarms}):
            alarm.add_metric([name], 1 if name in alarms else 0)
        if status.get("updated"):
            gauge(
                "sync_status_age_seconds",
                "Seconds since the sync follower last wrote its status",
                max(0.0, now - status["updated"]),
            )
    out += [held, alarm]
    present = 1 if status is not None else 0
    gauge("sync_status_present", "1 when status.json of `resolver sync` is readable", present)
    return out


class _Families:
    def __init__(self, items: list) -> None:
        self.items = items

    def collect(self):  # prometheus_client's collector protocol
        return iter(self.items)


def render(snap: dict[str, Any], status: dict[str, Any] | None, now: float | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families(snap, status, time.time() if now is None else now)))
    return generate_latest(registry)


def list_facts(snap: dict[str, Any], now: float) -> dict[str, Any]:
    """The list in force as /healthz and `resolver status` show it (the oldest across workers)."""
    lst = snap.get("list", {})
    verified = lst.get("verified_at")
    return {
        "workers": snap.get("workers", 1),
        "workers_with_list": snap.get("workers_with_list", 0),
        "serial": lst.get("serial"),
        "entries": lst.get("entries", 0),
        "age_seconds": None if verified is None else max(0, int(now - verified)),
        "expires": lst.get("expires"),
    }


def health(snap: dict[str, Any] | None, now: float | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for /healthz: 200 when every worker answers and enforces a list."""
    now = time.time() if now is None else now
    if snap is None:
        return 503, {"status": "unavailable", "reason": "workers did not answer"}
    body: dict[str, Any] = {**list_facts(snap, now), "per_worker": snap.get("per_worker", [])}
    if body["serial"] is None:
        body["status"] = "no_list"
        return 503, body
    body["status"] = "ok"
    return 200, body


def make_app(source: SnapshotSource, state_dir: Path) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        snap = await source()
        data = render(snap, read_sync_status(state_dir))
        return web.Response(body=data, content_type="text/plain", charset="utf-8")

    async def healthz(request: web.Request) -> web.Response:
        try:
            snap = await source()
        except Exception:
            snap = None
        code, body = health(snap)
        return web.json_response(body, status=code)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
