"""The console's pages: one small function per page or action.

Reads and actions go through the store, lifecycle and complaints objects the API uses, with the
signed-in officer as principal, so the same roles, four-eyes rules and audit apply.
"""

from __future__ import annotations

import asyncio
import io
from functools import partial
from importlib import resources
from typing import Any, TypeVar

import pyotp
import segno
from aiohttp import web

from blocklist.authority.console import charts
from blocklist.authority.console.accounts import SignInRefused
from blocklist.authority.console.web import (
    PREFIX,
    Refused,
    accounts,
    authority,
    cookie_name,
    field,
    form,
    redirect,
    render,
    session,
    set_cookie,
    words,
)
from blocklist.authority.errors import AuthorityError, Invalid, NotFound, http_status
from blocklist.authority.roles import ROLES, may, require
from blocklist.authority.statuses import ENTRY_STATUSES
from blocklist.authority.store import ImportLine
from blocklist.entries import parse_kind
from blocklist.errors import InvalidEntry

T = TypeVar("T")
PAGE = 100
MAX_IMPORT_LINES = 20000
PREVIEW_LINES = 1000
_STATIC = {"console.css": "text/css"}


async def off_loop(func: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(partial(func, *args, **kwargs))


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise NotFound("not_found", f"no {name.removesuffix('_id')} {raw[:20]!r}")
    return int(raw)


def _who(request: web.Request):
    return session(request).principal


# ---------------------------------------------------------------- sign-in and setup


async def login_page(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html", error=None)


async def login(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    name, password, code = (
        field(data, "name", 64),
        field(data, "password", 256),
        field(data, "code", 10),
    )
    try:
        secret, _ = await off_loop(accounts(request).sign_in, name, password, code.strip())
    except SignInRefused as exc:
        # Slower with each failure, up to a few seconds; a locked account waits its lockout out.
        await asyncio.sleep(min(4.0, 0.25 * 2 ** min(exc.failures, 4)))
        key = "locked" if exc.locked else "sign_in_refused"
        return render(request, "login.html", code=401 if not exc.locked else 429, error=key)
    # A fresh session id at every sign-in: a cookie planted before it is never promoted.
    resp = redirect("/")
    set_cookie(resp, request, "console_session", secret)
    resp.del_cookie(cookie_name(request, "console_pre"), path="/")
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    everywhere = data.get("everywhere") == "1"
    await off_loop(accounts(request).sign_out, session(request), everywhere)
    resp = redirect("/login")
    resp.del_cookie(cookie_name(request, "console_session"), path="/")
    raise resp


def _setup(
    request: web.Request, step: int, name: str = "", error: str | None = None, **extra: str
) -> web.Response:
    ctx = {"setup_code": "", "qr": "", "key": "", **extra}
    return render(
        request, "setup.html", code=422 if error else 200, step=step, name=name, error=error, **ctx
    )


async def setup_page(request: web.Request) -> web.StreamResponse:
    return _setup(request, 1)


async def setup(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    name, code = field(data, "name", 64), field(data, "setup_code", 100).strip()
    try:
        secret = await off_loop(
            accounts(request).begin_setup, name, code, field(data, "password", 1000)
        )
    except Invalid as exc:
        return _setup(request, 1, name, str(exc))
    issuer = authority(request).config.authority.name
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)
    buf = io.BytesIO()
    segno.make(uri, error="m").save(
        buf, kind="svg", xmldecl=False, svgns=True, nl=False, scale=4, title="QR", svgclass="qr"
    )
    return _setup(request, 2, name, setup_code=code, qr=buf.getvalue().decode(), key=secret)


async def setup_confirm(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    name, code = field(data, "name", 64), field(data, "setup_code", 100).strip()
    try:
        await off_loop(accounts(request).finish_setup, name, code, field(data, "code", 10).strip())
    except Invalid as exc:
        return _setup(request, 1, name, str(exc))
    return _setup(request, 3, name)


# ---------------------------------------------------------------- dashboard


async def dashboard(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    status = await off_loop(auth.status)
    pending = await off_loop(auth.store.list_entries, who, status="pending", limit=1000)
    listed = await off_loop(auth.store.list_entries, who, status="active", limit=10000)
    delists = [e for e in listed if e.delist_pending and e.delist_requested_by != who.name]
    batches = await off_loop(auth.store.pending_batches, who)
    complaints = await off_loop(auth.complaints.list, who, "received", 1000)
    reviews = await off_loop(auth.lifecycle.review_due, who)
    takedowns = await off_loop(_takedowns, auth, who)
    comp = await off_loop(auth.store.compliance, who, auth.deadline)
    late = [i for i in comp["instances"] if i["overdue"] or i["alarms"] or i["divergent"]]
    approver = may(who, "approve")
    return render(
        request,
        "dashboard.html",
        status=status,
        # Only ids, never values: the dashboard is what someone behind the officer sees first.
        to_approve=[e for e in pending if e.added_by != who.name] if approver else [],
        batches=[b for b in batches if b["created_by_name"] != who.name] if approver else [],
        delists=delists if approver else [],
        complaints=complaints if may(who, "decide") else [],
        reviews=reviews,
        takedowns=takedowns,
        late=late,
        charts=await off_loop(_charts, request, auth, who, comp),
    )


def _takedowns(auth, who) -> list[dict]:
    entries = auth.store.list_entries(who, status="takedown", limit=1000)
    out = []
    for e in entries:
        try:
            notice = auth.lifecycle.takedown(e.id)
        except NotFound:
            notice = {}
        out.append({"id": e.id, "deadline": notice.get("deadline"), "sent": notice.get("sent")})
    return sorted(out, key=lambda d: d["deadline"] or 0)


def _charts(request: web.Request, auth, who, comp: dict) -> list[str]:
    t = words(request)
    pubs = list(reversed(auth.store.publications(limit=30)))
    report = auth.lifecycle.report(who)
    removal = report["time_to_removal_by_month"]
    outcomes = report["complaints_by_status"]
    lag = comp["instances"]
    return [
        charts.bars(
            "c-size",
            t("chart_size"),
            [str(p["serial"]) for p in pubs],
            [
                ("entries", [p["entry_count"] for p in pubs]),
                ("+", [p["added"] for p in pubs]),
                ("−", [p["removed"] for p in pubs]),
            ],
            t("no_data"),
        ),
        charts.bars(
            "c-removal",
            t("chart_removal"),
            list(removal),
            [("median h", [m["median_hours"] for m in removal.values()])],
            t("no_data"),
        ),
        charts.bars(
            "c-complaints",
            t("chart_complaints"),
            list(outcomes),
            [("complaints", list(outcomes.values()))],
            t("no_data"),
        ),
        charts.bars(
            "c-lag",
            t("chart_lag"),
            [f"{i['asp']}/{i['instance'] or '-'}" for i in lag],
            [("lag", [i["lag"] for i in lag])],
            t("no_data"),
        ),
    ]


# ---------------------------------------------------------------- entries


async def entries(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    q = request.query
    status = q.get("status", "")
    status = status if status in ENTRY_STATUSES else ""
    country = q.get("country", "").strip().upper()[:2]
    raw = q.get("offset", "")
    offset = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 9 else 0
    records = await off_loop(
        auth.store.list_entries,
        who,
        status=status or None,
        search=q.get("q", "")[:200] or None,
        limit=PAGE,
        offset=offset,
        country=country or None,
    )
    return render(
        request,
        "entries.html",
        entries=records,
        statuses=ENTRY_STATUSES,
        status=status,
        country=country,
        q=q.get("q", "")[:200],
        offset=offset,
        page=PAGE,
    )


async def entry(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    eid = _id(request, "entry_id")
    record = await off_loop(auth.store.get, who, eid)
    history = await off_loop(auth.store.audit_log, who, 200, eid)
    checks = await off_loop(auth.lifecycle.checks, who, eid, 20)
    return render(
        request,
        "entry.html",
        e=record,
        history=history,
        checks=checks,
        done=request.query.get("done"),
    )


async def entry_new(request: web.Request) -> web.StreamResponse:
    return render(request, "entry_new.html", error=None, values={})


async def entry_add(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    data = await form(request)
    values = {k: field(data, k) for k in ("value", "kind", "hosting_country", "evidence", "notes")}
    try:
        kind = parse_kind(values["kind"]) if values["kind"] else None
        record = await off_loop(
            auth.store.add_entry,
            who,
            field(data, "value", 8192),
            kind=kind,
            hosting_country=values["hosting_country"],
            evidence=values["evidence"],
            category="csam",
            notes=values["notes"],
        )
    except (AuthorityError, InvalidEntry) as exc:  # shown on the form, which keeps the input
        code = http_status(exc) if isinstance(exc, AuthorityError) else 422
        return render(request, "entry_new.html", code=code, error=str(exc), values=values)
    raise redirect(f"/entries/{record.id}")


async def entry_action(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    eid = _id(request, "entry_id")
    action = request.match_info["action"]
    data = await form(request)
    reason = field(data, "reason")
    if action == "approve":
        await off_loop(auth.store.approve, who, eid)
        auth.list_changed()
    elif action == "reject":
        await off_loop(auth.store.reject, who, eid, reason)
    elif action == "delist":  # a request: another approver confirms it
        await off_loop(auth.store.delist, who, eid, reason)
    elif action == "confirm-delist":
        await off_loop(auth.store.confirm_delist, who, eid, reason)
        auth.list_changed()
    elif action == "reject-delist":
        await off_loop(auth.store.reject_delist, who, eid, reason)
    elif action == "confirm-removal":
        await off_loop(auth.lifecycle.confirm_removal, who, eid)
        auth.list_changed()
    elif action == "reverify":
        await off_loop(auth.lifecycle.reverify, who, eid, reason)
    else:
        raise NotFound("not_found", "no such action")
    raise redirect(f"/entries/{eid}", done=action)


# ---------------------------------------------------------------- batches and import


def _parse_import(text: str) -> tuple[list[ImportLine], int]:
    lines = text.splitlines()
    if len(lines) > MAX_IMPORT_LINES:
        raise Invalid("too_many_lines", f"at most {MAX_IMPORT_LINES} lines per console import")
    out = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in raw.split(",", 2)]
        parts += [""] * (3 - len(parts))
        out.append(ImportLine(n, parts[0], None, parts[1], parts[2]))
    return out, len(lines)


async def import_page(request: web.Request) -> web.StreamResponse:
    return render(request, "import.html", text="", source="", report=None, accepted=[])


async def import_post(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    data = await form(request)
    text, source = field(data, "lines", 4 * 1024 * 1024), field(data, "source", 200)
    lines, _ = _parse_import(text)
    if not lines:
        raise Invalid("empty", "no lines to import")
    submit = data.get("submit") == "1"
    report = await off_loop(auth.store.import_batch, who, lines, source, dry_run=not submit)
    if submit and report.batch_id:
        raise redirect(f"/batches/{report.batch_id}")
    refused = {r["line"] for r in report.refused}
    accepted = [line for line in lines if line.line not in refused][:PREVIEW_LINES]
    return render(
        request, "import.html", text=text, source=source, report=report, accepted=accepted
    )


async def batch(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    bid = _id(request, "batch_id")
    info = await off_loop(auth.store.get_batch, who, bid)
    return render(request, "batch.html", b=info)


async def batch_action(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    bid = _id(request, "batch_id")
    data = await form(request)
    if request.match_info["action"] == "accept":
        await off_loop(
            auth.store.decide_batch,
            who,
            bid,
            accept=True,
            confirm_large=data.get("confirm_large") == "1",
        )
        auth.list_changed()
    else:
        await off_loop(
            auth.store.decide_batch, who, bid, accept=False, reason=field(data, "reason")
        )
    raise redirect(f"/batches/{bid}")


# ---------------------------------------------------------------- publish


async def publish_page(request: web.Request) -> web.StreamResponse:
    auth = authority(request)
    changes = await off_loop(auth.store.pending_changes)
    status = await off_loop(auth.status)
    return render(
        request,
        "publish.html",
        changes=changes,
        status=status,
        published=request.query.get("serial"),
    )


async def publish(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    result = await auth.publish(who)
    raise redirect("/publish", serial=result.get("serial"))


# ---------------------------------------------------------------- complaints


async def complaints(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    status = request.query.get("status", "received")
    status = status if status in ("received", "upheld", "rejected", "all") else "received"
    rows = await off_loop(auth.complaints.list, who, None if status == "all" else status, 500)
    return render(request, "complaints.html", complaints=rows, status=status)


async def complaint(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    c = await off_loop(auth.complaints.get, who, request.match_info["complaint_id"][:40])
    return render(request, "complaint.html", c=c)


async def complaint_decide(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    cid = request.match_info["complaint_id"][:40]
    data = await form(request)
    decision = field(data, "decision", 20)
    await off_loop(auth.complaints.decide, who, cid, decision, field(data, "reasons"))
    if decision == "upheld":
        auth.list_changed()
    raise redirect(f"/complaints/{cid}")


# ---------------------------------------------------------------- lifecycle, compliance, audit


async def lifecycle(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    return render(
        request,
        "lifecycle.html",
        takedowns=await off_loop(_takedowns, auth, who),
        reviews=await off_loop(auth.lifecycle.review_due, who),
        removal=await off_loop(auth.store.list_entries, who, status="removal_pending", limit=500),
        report=await off_loop(auth.lifecycle.report, who),
        ran=request.query.get("ran"),
    )


async def lifecycle_run(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    require(who, "publish")
    result = await auth.lifecycle_pass()
    raise redirect("/lifecycle", ran=result["checked"])


async def compliance(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    comp = await off_loop(auth.store.compliance, who, auth.deadline)
    return render(request, "compliance.html", comp=comp)


async def audit(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    records = await off_loop(auth.store.audit_log, who, 200)
    report = await off_loop(auth.store.verify_audit)
    return render(request, "audit.html", records=records, chain=report)


# ---------------------------------------------------------------- officers


async def officers(request: web.Request) -> web.StreamResponse:
    return await _officers_with(request, None)


async def officer_add(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    data = await form(request)
    name = field(data, "name", 64)
    info, token = await off_loop(auth.store.add_officer, who, name, field(data, "role", 20))
    code = await off_loop(accounts(request).reset, who, name)
    return await _officers_with(request, {"name": name, "token": token, "code": code, **info})


async def _officers_with(request: web.Request, shown: dict | None) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    rows = await off_loop(auth.store.list_officers, who)
    enrolled = await off_loop(accounts(request).enrolled)
    return render(
        request, "officers.html", officers=rows, enrolled=enrolled, roles=ROLES, shown=shown
    )


async def officer_action(request: web.Request) -> web.StreamResponse:
    auth, who = authority(request), _who(request)
    name = request.match_info["name"][:64]
    action = request.match_info["action"]
    data = await form(request)
    if action == "confirm":
        await off_loop(auth.store.confirm_officer, who, name)
    elif action == "deactivate":
        await off_loop(auth.store.deactivate_officer, who, name, field(data, "reason", 500))
    elif action == "role":
        await off_loop(
            auth.store.change_role, who, name, field(data, "role", 20), field(data, "reason", 500)
        )
    elif action == "reset":
        code = await off_loop(accounts(request).reset, who, name)
        return await _officers_with(request, {"name": name, "code": code})
    else:
        raise NotFound("not_found", "no such action")
    raise redirect("/officers")


# ---------------------------------------------------------------- static files


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise Refused(404, "page_not_found")
    data = resources.files("blocklist.authority.console").joinpath("static", name).read_bytes()
    return web.Response(
        body=data, content_type=_STATIC[name], headers={"Cache-Control": "max-age=3600"}
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", dashboard)
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/setup", setup_page)
    r.add_post("/setup", setup)
    r.add_post("/setup/confirm", setup_confirm)
    r.add_get("/entries", entries)
    r.add_get("/entries/new", entry_new)
    r.add_post("/entries", entry_add)
    r.add_get("/entries/{entry_id}", entry)
    r.add_post("/entries/{entry_id}/{action}", entry_action)
    r.add_get("/import", import_page)
    r.add_post("/import", import_post)
    r.add_get("/batches/{batch_id}", batch)
    r.add_post("/batches/{batch_id}/{action}", batch_action)
    r.add_get("/publish", publish_page)
    r.add_post("/publish", publish)
    r.add_get("/complaints", complaints)
    r.add_get("/complaints/{complaint_id}", complaint)
    r.add_post("/complaints/{complaint_id}/decide", complaint_decide)
    r.add_get("/lifecycle", lifecycle)
    r.add_post("/lifecycle/run", lifecycle_run)
    r.add_get("/compliance", compliance)
    r.add_get("/audit", audit)
    r.add_get("/officers", officers)
    r.add_post("/officers", officer_add)
    r.add_post("/officers/{name}/{action}", officer_action)
    r.add_get("/static/{name}", static)


__all__ = ["PREFIX", "add_routes"]
