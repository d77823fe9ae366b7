"""The loopback control endpoint: `resolver check NAME` and `resolver status`.

Served on the metrics port (loopback only, `metrics.listen`), next to /metrics and /healthz:

    GET /control/check?name=NAME   the verdict for NAME under the list in force (resolver.check)
    GET /control/status            list age and serial, alarms, held update, mode, exemptions,
                                   log-only counts, cache and upstream health

With several workers the supervisor asks worker 0 for the verdict (every worker enforces the
same list once it is loaded; `per_worker` in /healthz shows a lagging one) and adds up every
worker's counters for the status. The commands are thin HTTP clients of these two routes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from resolver.check import BadName
from resolver.metrics import list_facts, read_sync_status

CheckSource = Callable[[str], Awaitable[dict[str, Any]]]
LocalSource = Callable[[], Awaitable[dict[str, Any]]]
SnapshotSource = Callable[[], Awaitable[dict[str, Any]]]

TOP_ENTRIES = 20  # per-entry counts shown by `resolver status` (all of them are in /metrics)
TLS_WARNING = 14 * 86400  # an alarm this long before the DoT/DoH certificate expires


def top(counts: dict[str, int], n: int = TOP_ENTRIES) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def status_view(
    snap: dict[str, Any], sync: dict[str, Any] | None, local: dict[str, Any], now: float
) -> dict[str, Any]:
    """What `resolver status` shows, from merged counters, status.json and worker-local facts."""
    lst = snap.get("list", {})
    alarms: dict[str, str] = dict((sync or {}).get("alarms") or {})
    if sync is None:
        alarms["sync_status"] = "status.json of `resolver sync` is missing or unreadable"
    if lst.get("serial") is None:
        alarms.setdefault("no_list", "no verified list in force: nothing is being blocked")
    elif lst.get("expires") is not None and now >= lst["expires"]:
        alarms.setdefault("frozen", "the notification in force expired; still enforcing it")
    ups = snap.get("upstreams", {})
    if ups and not any(u["up"] for u in ups.values()):
        alarms["upstreams"] = "every upstream resolver is failing"
    if local.get("mode") == "log-only":
        alarms["log_only"] = "log-only mode: listed names are answered, not blocked"
    tls_expiry = snap.get("tls_expiry") or None
    if tls_expiry is not None and tls_expiry - now < TLS_WARNING:
        alarms["tls_certificate"] = (
            "the DoT/DoH certificate has expired"
            if tls_expiry <= now
            else f"the DoT/DoH certificate expires in {int((tls_expiry - now) // 86400)} days"
        )
    hits, misses = snap.get("cache_hits", 0), snap.get("cache_misses", 0)
    logged = snap.get("logged_by_entry", {})
    return {
        "mode": local.get("mode", "enforce"),
        "list": list_facts(snap, now),
        "held": (sync or {}).get("held"),
        "alarms": alarms,
        "cache": {
            "entries": snap.get("cache_entries", 0),
            "bytes": snap.get("cache_bytes", 0),
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "evictions": snap.get("cache_evictions", 0),
            "stale_answers": snap.get("stale_answers", 0),
        },
        "upstreams": {
            name: {
                "up": bool(u["up"]),
                "queries": u["queries"],
                "errors": sum(u["errors"].values()),
                "mean_latency_ms": round(1000 * u["latency_sum"] / sum(u["buckets"]), 2)
                if sum(u["buckets"])
                else None,
            }
            for name, u in ups.items()
        },
        "exemptions": local.get("exemptions", {}),
        "log_only": {
            "total": sum(logged.values()) + snap.get("logged_other", 0),
            "by_entry": top(logged),
            "other": snap.get("logged_other", 0),
        },
        "outcomes": snap.get("outcomes", {}),
        "transport": snap.get("transport", {}),
        "tls_expires": tls_expiry,
    }


def add_routes(
    app: web.Application,
    check: CheckSource,
    local: LocalSource,
    snapshot: SnapshotSource,
    state_dir: Path,
) -> None:
    async def check_route(request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            return web.json_response({"error": "missing ?name="}, status=400)
        try:
            return web.json_response(await check(name))
        except BadName as exc:
            return web.json_response({"error": f"bad name: {exc}"}, status=400)

    async def status_route(request: web.Request) -> web.Response:
        snap = await snapshot()
        view = status_view(snap, read_sync_status(state_dir), await local(), time.time())
        return web.json_response(view)

    app.router.add_get("/control/check", check_route)
    app.router.add_get("/control/status", status_route)


# ---------------------------------------------------------------------------------------------
# Client side (the `resolver check` and `resolver status` commands, and `resolver sync`)


class ControlError(Exception):
    pass


def base_url(listen: str, port: int) -> str:
    host = f"[{listen}]" if ":" in listen else listen
    return f"http://{host}:{port}"


def get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a control route; ControlError names what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise ControlError(detail or f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControlError(
            f"cannot reach the resolver's control endpoint {url}: {reason}"
        ) from None


def check_url(base: str, name: str) -> str:
    return f"{base}/control/check?{urllib.parse.urlencode({'name': name})}"


def status_url(base: str) -> str:
    return f"{base}/control/status"


def print_check(v: dict[str, Any]) -> None:
    print(f"{v['name']}: {v['verdict']}")
    if v.get("entry") is not None:
        print(f"  entry       {v['entry']} (listed as {v['listed_as']})")
    print(f"  serial      {v['serial'] if v['serial'] is not None else 'none'}")
    print(f"  mode        {v['mode']}")
    if v.get("zone"):
        print(f"  forwarded   to the upstreams of zone {v['zone']}")
    print(f"  why         {v['reason']}")


def print_status(s: dict[str, Any]) -> None:
    lst = s["list"]
    if lst["serial"] is None:
        print("list        none in force")
    else:
        print(
            f"list        serial {lst['serial']}, {lst['entries']} entries, verified "
            f"{lst['age_seconds']} s ago ({lst['workers_with_list']}/{lst['workers']} workers)"
        )
    print(f"mode        {s['mode']}")
    alarms = s["alarms"]
    print(f"alarms      {'none' if not alarms else '; '.join(alarms.values())}")
    held = s.get("held")
    held_text = "none" if not held else f"serial {held['serial']}: {held['message']}"
    print(f"held        {held_text}")
    transports = ", ".join(f"{k} {v}" for k, v in s.get("transport", {}).items())
    print(f"queries     {transports or '-'}")
    c = s["cache"]
    ratio = "-" if c["hit_ratio"] is None else f"{c['hit_ratio']:.1%}"
    print(f"cache       {c['entries']} entries, {c['bytes']} bytes, hit ratio {ratio}")
    for name, u in s["upstreams"].items():
        state = "up" if u["up"] else "DOWN"
        latency = "-" if u["mean_latency_ms"] is None else f"{u['mean_latency_ms']} ms"
        print(
            f"upstream    {name} {state}: {u['queries']} queries, {u['errors']} errors, "
            f"mean {latency}"
        )
    ex = s["exemptions"]
    shown = ", ".join(f"{e['name']} (entries {e['entries']})" for e in ex.get("exempted", []))
    print(
        f"exemptions  {ex.get('exempted_total', 0)} in use of {ex.get('exempt_names', 0)}: "
        f"{shown or '-'}"
    )
    if s["mode"] == "log-only" or s["log_only"]["total"]:
        lo = s["log_only"]
        print(f"log-only    {lo['total']} queries would have been blocked; {lo['by_entry']}")
