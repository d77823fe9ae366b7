"""The authority's HTTP API (aiohttp, JSON): officers' endpoints, distribution to ASPs, acks.

Every caller presents a bearer token; tokens are stored only as SHA-256 hashes. Officers act
within their role; ASPs may read the notification and files of the editions they are allowed
and post acks. The notification endpoint long-polls: with `after=<serial>` it answers as soon as
a newer serial exists, or after `wait` seconds with the current one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocklist.authority.service import Authority
from blocklist.authority.store import AuthorityError, ImportLine, Principal
from blocklist.entries import parse_kind

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", Principal)
AUTHORITY = web.AppKey("authority", Authority)
_FILE_NAME = re.compile(r"^(snapshot|delta)-[0-9a-f-]{36}-[0-9-]+\.bin$")
EDITIONS = ("hashed", "plain")
B = TypeVar("B", bound=BaseModel)


# ---------------------------------------------------------------- request bodies


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntryIn(Body):
    value: Annotated[str, Field(min_length=1, max_length=8192)]
    kind: Literal["domain", "url"] | None = None
    hosting_country: Annotated[str, Field(min_length=2, max_length=2)]
    evidence: Annotated[str, Field(min_length=1, max_length=2000)]
    category: Annotated[str, Field(min_length=1, max_length=100)] = "csam"
    notes: Annotated[str, Field(max_length=2000)] = ""


class ReasonIn(Body):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class BatchLineIn(Body):
    # Only the shape is checked here: a bad value in one line refuses that line, not the batch.
    value: str
    kind: str | None = None
    hosting_country: str = ""
    evidence: str = ""
    category: str = "csam"
    notes: str = ""
    line: int | None = None  # the client's own line number, echoed in refusals


class BatchIn(Body):
    source: Annotated[str, Field(max_length=200)] = ""
    lines: Annotated[list[BatchLineIn], Field(min_length=1, max_length=5_000_000)]


class BatchAcceptIn(Body):
    confirm_large: bool = False


class OfficerIn(Body):
    name: str
    role: Literal["officer", "approver", "oversight", "admin"]


class AspIn(Body):
    name: str
    plain_allowed: bool = False


class ComplaintIn(Body):
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
    entry_id: int | None = None
    host: Annotated[str, Field(min_length=1, max_length=253)]
    role: Literal["site_owner", "hosting_provider", "visitor", "other"]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    contact: Annotated[str, Field(max_length=200)] = ""
    language: Annotated[str, Field(max_length=16)] = ""
    received: Annotated[int, Field(ge=0)]


class DecisionIn(Body):
    decision: Literal["upheld", "rejected"]
    reasons: Annotated[str, Field(min_length=1, max_length=2000)]


class TakedownIn(Body):
    recipient: Annotated[str, Field(min_length=1, max_length=500)]
    sent: Annotated[int, Field(ge=0)] | None = None


class PartnerNoticeIn(Body):
    partner: Annotated[str, Field(min_length=1, max_length=200)]
    reference: Annotated[str, Field(max_length=200)] = ""


class NoteIn(Body):
    note: Annotated[str, Field(max_length=500)] = ""


class AckIn(Body):
    instance: Annotated[str, Field(min_length=1, max_length=64)]
    serial: Annotated[int, Field(ge=0)]
    checksum: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    status: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- helpers


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


async def parse_body(request: web.Request, model: type[B]) -> B:
    raw = await request.read()
    limit = authority(request).config.api.max_body_bytes
    if request.path != "/v1/batches" and len(raw) > limit:
        raise AuthorityError(413, "too_large", f"request body is larger than {limit} bytes")
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuthorityError(
            400, "malformed_json", f"request body is not valid JSON: {exc}"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise AuthorityError(
            422, "invalid_body", f"{where}: {first['msg']}", errors=len(exc.errors())
        ) from None


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def authority(request: web.Request) -> Authority:
    return request.app[AUTHORITY]


def entry_id(request: web.Request) -> int:
    try:
        return int(request.match_info["entry_id"])
    except ValueError:
        raise AuthorityError(404, "not_found", "entry ids are numbers") from None


def _int_query(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise AuthorityError(
            400, "bad_query", f"query parameter {name!r} must be a number"
        ) from None


# ---------------------------------------------------------------- middleware

PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json"})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AuthorityError as exc:
        return web.json_response(exc.to_dict(), status=exc.status)
    except web.HTTPRequestEntityTooLarge as exc:
        return error(413, "too_large", f"request body is larger than {exc.max_size} bytes")


def make_auth_middleware(max_body: int) -> Callable:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Small bodies everywhere except the batch import, which has its own larger limit.
        if request.path != "/v1/batches" and (request.content_length or 0) > max_body:
            return error(413, "too_large", f"request body is larger than {max_body} bytes")
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        who = None
        if scheme.lower() == "bearer" and token:
            who = authority(request).store.authenticate(token.strip())
        if who is None:
            resp = error(401, "unauthorized", "a valid bearer token is required")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="cordon"'
            return resp
        request[PRINCIPAL] = who
        return await handler(request)

    return auth_middleware


# ---------------------------------------------------------------- officers' endpoints

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "serial": authority(request).current_serial()})


@routes.get("/v1/openapi.json")
async def openapi_doc(request: web.Request) -> web.Response:
    from blocklist.authority.openapi import openapi

    return web.json_response(openapi())


@routes.get("/v1/entries")
async def list_entries(request: web.Request) -> web.Response:
    records = authority(request).store.list_entries(
        principal(request),
        status=request.query.get("status"),
        search=request.query.get("q"),
        limit=_int_query(request, "limit", 100),
        offset=_int_query(request, "offset", 0),
    )
    return web.json_response({"entries": [r.to_dict() for r in records]})


@routes.post("/v1/entries")
async def add_entry(request: web.Request) -> web.Response:
    body = await parse_body(request, EntryIn)
    record = authority(request).store.add_entry(
        principal(request),
        body.value,
        kind=parse_kind(body.kind) if body.kind else None,
        hosting_country=body.hosting_country,
        evidence=body.evidence,
        category=body.category,
        notes=body.notes,
    )
    return web.json_response(record.to_dict(), status=201)


@routes.get("/v1/entries/{entry_id}")
async def get_entry(request: web.Request) -> web.Response:
    return web.json_response(
        authority(request).store.get(principal(request), entry_id(request)).to_dict()
    )


@routes.post("/v1/entries/{entry_id}/approve")
async def approve(request: web.Request) -> web.Response:
    auth = authority(request)
    record = auth.store.approve(principal(request), entry_id(request))
    auth.list_changed()
    return web.json_response(record.to_dict())


@routes.post("/v1/entries/{entry_id}/reject")
async def reject(request: web.Request) -> web.Response:
    body = await parse_body(request, ReasonIn)
    record = authority(request).store.reject(principal(request), entry_id(request), body.reason)
    return web.json_response(record.to_dict())


@routes.post("/v1/entries/{entry_id}/delist")
async def delist(request: web.Request) -> web.Response:
    body = await parse_body(request, ReasonIn)
    auth = authority(request)
    record = auth.store.delist(principal(request), entry_id(request), body.reason)
    auth.list_changed()
    return web.json_response(record.to_dict())


@routes.post("/v1/batches")
async def import_batch(request: web.Request) -> web.Response:
    body = await parse_body(request, BatchIn)
    lines = [
        ImportLine(
            e.line if e.line is not None else n,
            e.value,
            e.kind,
            e.hosting_country,
            e.evidence,
            e.category,
            e.notes,
        )
        for n, e in enumerate(body.lines, start=1)
    ]
    store = authority(request).store
    report = await asyncio.to_thread(store.import_batch, principal(request), lines, body.source)
    return web.json_response(report.to_dict(), status=201 if report.batch_id else 200)


@routes.get("/v1/batches/{batch_id}")
async def get_batch(request: web.Request) -> web.Response:
    batch_id = (
        int(request.match_info["batch_id"]) if request.match_info["batch_id"].isdigit() else -1
    )
    return web.json_response(authority(request).store.get_batch(principal(request), batch_id))


@routes.post("/v1/batches/{batch_id}/{decision:accept|reject}")
async def decide_batch(request: web.Request) -> web.Response:
    batch_id = (
        int(request.match_info["batch_id"]) if request.match_info["batch_id"].isdigit() else -1
    )
    auth = authority(request)
    if request.match_info["decision"] == "accept":
        body = await parse_body(request, BatchAcceptIn)
        result = await asyncio.to_thread(
            auth.store.decide_batch,
            principal(request),
            batch_id,
            accept=True,
            confirm_large=body.confirm_large,
        )
        auth.list_changed()
    else:
        reason = (await parse_body(request, ReasonIn)).reason
        result = await asyncio.to_thread(
            auth.store.decide_batch, principal(request), batch_id, accept=False, reason=reason
        )
    return web.json_response(result)


@routes.post("/v1/publish")
async def publish(request: web.Request) -> web.Response:
    who = principal(request)
    authority(request).store.require(who, "publish")
    return web.json_response(await authority(request).publish(who))


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    who = principal(request)
    authority(request).store.require(who, "read")
    return web.json_response(authority(request).status())


@routes.get("/v1/compliance")
async def compliance(request: web.Request) -> web.Response:
    auth = authority(request)
    return web.json_response(auth.store.compliance(principal(request), auth.deadline))


@routes.get("/v1/officers")
async def list_officers(request: web.Request) -> web.Response:
    return web.json_response(
        {"officers": authority(request).store.list_officers(principal(request))}
    )


@routes.post("/v1/officers")
async def add_officer(request: web.Request) -> web.Response:
    body = await parse_body(request, OfficerIn)
    info, token = authority(request).store.add_officer(principal(request), body.name, body.role)
    return web.json_response({**info, "token": token}, status=201)


@routes.get("/v1/asps")
async def list_asps(request: web.Request) -> web.Response:
    return web.json_response({"asps": authority(request).store.list_asps(principal(request))})


@routes.post("/v1/asps")
async def add_asp(request: web.Request) -> web.Response:
    body = await parse_body(request, AspIn)
    info, token = authority(request).store.add_asp(
        principal(request), body.name, body.plain_allowed
    )
    return web.json_response({**info, "token": token}, status=201)


@routes.get("/v1/audit")
async def audit_log(request: web.Request) -> web.Response:
    entry = request.query.get("entry")
    records = authority(request).store.audit_log(
        principal(request),
        limit=_int_query(request, "limit", 100),
        entry_id=_int_query(request, "entry", 0) if entry is not None else None,
    )
    return web.json_response({"records": records})


@routes.get("/v1/audit/verify")
async def audit_verify(request: web.Request) -> web.Response:
    store = authority(request).store
    store.require(principal(request), "read")
    report = await asyncio.to_thread(store.verify_audit)
    return web.json_response(report.__dict__)


# ---------------------------------------------------------------- distribution to ASPs


def _check_edition(request: web.Request) -> str:
    edition = request.match_info["edition"]
    if edition not in EDITIONS:
        raise AuthorityError(404, "not_found", f"no edition {edition!r}")
    who = principal(request)
    if edition == "plain" and who.kind == "asp" and not who.plain_allowed:
        raise AuthorityError(
            403, "forbidden", f"ASP {who.name} is not authorised for the plain edition"
        )
    if who.kind == "officer":
        authority(request).store.require(who, "read")
    return edition


@routes.get("/v1/list/{edition}/notification")
async def notification(request: web.Request) -> web.StreamResponse:
    edition = _check_edition(request)
    auth = authority(request)
    after = request.query.get("after")
    if after is not None:
        if not after.isdigit():
            raise AuthorityError(400, "bad_query", "after must be a serial number")
        wait = min(_int_query(request, "wait", 30), auth.long_poll_max)
        await auth.wait_for_newer(int(after), max(wait, 0))
    data = auth.notification_bytes(edition)
    if data is None:
        raise AuthorityError(404, "not_published", "nothing has been published yet")
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


@routes.get("/v1/list/{edition}/{name}")
async def list_file(request: web.Request) -> web.StreamResponse:
    edition = _check_edition(request)
    name = request.match_info["name"]
    path = authority(request).publish_dir / edition / name
    if not _FILE_NAME.match(name) or not path.is_file():
        raise AuthorityError(404, "not_found", f"no file {name!r} in the {edition} edition")
    # Snapshots and deltas never change once written: caches may keep them for ever.
    resp = web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable"})
    resp.content_type = "application/octet-stream"
    return resp


@routes.post("/v1/acks")
async def ack(request: web.Request) -> web.Response:
    body = await parse_body(request, AckIn)
    authority(request).store.record_ack(
        principal(request), body.instance, body.serial, bytes.fromhex(body.checksum), body.status
    )
    return web.json_response({"ok": True})


# ---------------------------------------------------------------- lifecycle


@routes.post("/v1/entries/{entry_id}/takedown")
async def record_takedown(request: web.Request) -> web.Response:
    body = await parse_body(request, TakedownIn)
    notice = authority(request).lifecycle.record_takedown(
        principal(request), entry_id(request), body.recipient, body.sent
    )
    return web.json_response(notice)


@routes.post("/v1/entries/{entry_id}/escalate")
async def escalate(request: web.Request) -> web.Response:
    body = await parse_body(request, ReasonIn)
    auth = authority(request)
    auth.lifecycle.escalate(principal(request), entry_id(request), body.reason)
    return web.json_response(auth.store.get(principal(request), entry_id(request)).to_dict())


@routes.post("/v1/entries/{entry_id}/partner-notice")
async def partner_notice(request: web.Request) -> web.Response:
    body = await parse_body(request, PartnerNoticeIn)
    authority(request).lifecycle.record_partner_notice(
        principal(request), entry_id(request), body.partner, body.reference
    )
    return web.json_response({"ok": True})


@routes.post("/v1/entries/{entry_id}/confirm-removal")
async def confirm_removal(request: web.Request) -> web.Response:
    auth = authority(request)
    auth.lifecycle.confirm_removal(principal(request), entry_id(request))
    auth.list_changed()
    return web.json_response(auth.store.get(principal(request), entry_id(request)).to_dict())


@routes.post("/v1/entries/{entry_id}/reverify")
async def reverify(request: web.Request) -> web.Response:
    body = await parse_body(request, NoteIn)
    review = authority(request).lifecycle.reverify(principal(request), entry_id(request), body.note)
    return web.json_response({"review_date": review})


@routes.get("/v1/entries/{entry_id}/checks")
async def entry_checks(request: web.Request) -> web.Response:
    checks = authority(request).lifecycle.checks(
        principal(request), entry_id(request), _int_query(request, "limit", 50)
    )
    return web.json_response({"checks": checks})


@routes.post("/v1/lifecycle/run")
async def lifecycle_run(request: web.Request) -> web.Response:
    auth = authority(request)
    auth.store.require(principal(request), "publish")
    return web.json_response(await auth.lifecycle_pass())


@routes.get("/v1/review")
async def review(request: web.Request) -> web.Response:
    return web.json_response(
        {"entries": authority(request).lifecycle.review_due(principal(request))}
    )


@routes.get("/v1/report")
async def report(request: web.Request) -> web.Response:
    return web.json_response(authority(request).lifecycle.report(principal(request)))


# ---------------------------------------------------------------- complaints


@routes.post("/v1/complaints")
async def submit_complaint(request: web.Request) -> web.Response:
    body = await parse_body(request, ComplaintIn)
    result, created = authority(request).complaints.submit(principal(request), **body.model_dump())
    return web.json_response(result, status=201 if created else 200)


@routes.get("/v1/complaints")
async def list_complaints(request: web.Request) -> web.Response:
    who = principal(request)
    book = authority(request).complaints
    if who.kind == "asp":
        since = _int_query(request, "since", 0)
        return web.json_response({"complaints": book.decided_since(who, since)})
    status = request.query.get("status")
    limit = _int_query(request, "limit", 100)
    return web.json_response({"complaints": book.list(who, status, limit)})


@routes.get("/v1/complaints/{complaint_id}")
async def get_complaint(request: web.Request) -> web.Response:
    who = principal(request)
    book = authority(request).complaints
    cid = request.match_info["complaint_id"]
    if who.kind == "asp":
        return web.json_response(book.status_for_asp(who, cid))
    return web.json_response(book.get(who, cid))


@routes.post("/v1/complaints/{complaint_id}/decide")
async def decide_complaint(request: web.Request) -> web.Response:
    body = await parse_body(request, DecisionIn)
    auth = authority(request)
    result = auth.complaints.decide(
        principal(request), request.match_info["complaint_id"], body.decision, body.reasons
    )
    if body.decision == "upheld":
        auth.list_changed()
    return web.json_response(result)


def make_app(auth: Authority) -> web.Application:
    app = web.Application(
        client_max_size=auth.config.api.max_import_bytes,
        middlewares=[errors_middleware, make_auth_middleware(auth.config.api.max_body_bytes)],
    )
    app[AUTHORITY] = auth
    app.add_routes(routes)

    async def lifecycle(app: web.Application):
        await auth.start()
        yield
        await auth.stop()

    app.cleanup_ctx.append(lifecycle)

    async def on_shutdown(app: web.Application) -> None:
        auth.wake_all()

    app.on_shutdown.append(on_shutdown)
    return app
