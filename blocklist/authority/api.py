"""The authority's HTTP API (aiohttp, JSON): officers' endpoints, distribution to ASPs, acks.

Every caller presents a bearer token; tokens are stored only as SHA-256 hashes. Each route
declares who may call it (`routes.RouteTable`, permissions from `roles`), and the middleware
enforces that before the handler runs; the store checks again. The notification endpoint
long-polls: with `after=<serial>` it answers as soon as a newer serial exists, or after `wait`
seconds with the current one. Store calls run in worker threads, never on the event loop.

`python -m blocklist.authority.api > docs/openapi.json` regenerates the checked-in OpenAPI
document; a test fails when the copy is stale or differs from the routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from blocklist.authority.anchors import parse_head
from blocklist.authority.bulk import drain, gc_paused
from blocklist.authority.errors import (
    AuthorityError,
    Conflict,
    Forbidden,
    Invalid,
    Malformed,
    NotFound,
    TooLarge,
    Unauthorized,
    http_status,
)
from blocklist.authority.feeds import FeedUpdate, check_feed_name
from blocklist.authority.feedsources import formats as feed_formats
from blocklist.authority.feedsources import refresh as feed_refresh
from blocklist.authority.feedsources import signature as feed_signature
from blocklist.authority.openapi import openapi
from blocklist.authority.roles import ROLES, Principal, require
from blocklist.authority.routes import Handler, Operation, RouteTable
from blocklist.authority.service import Authority
from blocklist.authority.store import ImportLine, ImportReport, Store
from blocklist.entries import parse_kind

PRINCIPAL = web.RequestKey("principal", Principal)
AUTHORITY = web.AppKey("authority", Authority)
_FILE_NAME = re.compile(r"^(snapshot|delta)-[0-9a-f-]{36}-[0-9-]+\.bin$")
# Ids and serials in paths and queries: ASCII digits only ("²".isdigit() is True), and within
# SQLite's signed 64-bit range.
_NUMBER = re.compile(r"^[0-9]{1,18}$")
EDITIONS = ("hashed", "plain")
# Bodies larger than this are parsed in a worker thread (a 1M-line import takes seconds).
_PARSE_INLINE_BYTES = 256 * 1024
MAX_ID = 2**63 - 1
T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
MAX_IMPORT_LINES = 5_000_000

DbInt = Annotated[int, Field(ge=0, le=MAX_ID)]


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
    line: DbInt | None = None  # the client's own line number, echoed in refusals


class BatchIn(Body):
    source: Annotated[str, Field(max_length=200)] = ""
    lines: Annotated[list[BatchLineIn], Field(min_length=1, max_length=MAX_IMPORT_LINES)]
    # Lines the client refused before sending, so the audit record counts every refusal.
    refused_by_client: DbInt = 0


_BATCH_LINES = TypeAdapter(list[BatchLineIn])


class BatchAcceptIn(Body):
    confirm_large: bool = False


class OfficerIn(Body):
    name: str
    role: Literal[ROLES]  # type: ignore[valid-type]


class RoleIn(Body):
    role: Literal[ROLES]  # type: ignore[valid-type]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class DeactivateIn(Body):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class TokenIn(Body):
    # Neither: a new token for the caller. Admins may name any officer or ASP.
    officer: Annotated[str, Field(max_length=64)] | None = None
    asp: Annotated[str, Field(max_length=64)] | None = None
    label: Annotated[str, Field(max_length=100)] = ""
    # Rotation: revoke the token this request was made with, once the new one exists.
    revoke_current: bool = False


class AspIn(Body):
    name: str
    plain_allowed: bool = False


class ComplaintIn(Body):
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
    entry_id: DbInt | None = None
    host: Annotated[str, Field(min_length=1, max_length=253)]
    role: Literal["site_owner", "hosting_provider", "visitor", "other"]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    contact: Annotated[str, Field(max_length=200)] = ""
    language: Annotated[str, Field(max_length=16)] = ""
    received: DbInt
    # The visitor's ticket (T-…) from the stop page, so officers can find the complaint by it.
    ticket: Annotated[str, Field(pattern=r"^T-[A-Za-z0-9_-]{4,64}$")] | None = None


class DecisionIn(Body):
    decision: Literal["upheld", "rejected"]
    reasons: Annotated[str, Field(min_length=1, max_length=2000)]


class TakedownIn(Body):
    recipient: Annotated[str, Field(min_length=1, max_length=500)]
    sent: DbInt | None = None


class PartnerNoticeIn(Body):
    partner: Annotated[str, Field(min_length=1, max_length=200)]
    reference: Annotated[str, Field(max_length=200)] = ""


class NoteIn(Body):
    note: Annotated[str, Field(max_length=500)] = ""


class AckIn(Body):
    instance: Annotated[str, Field(min_length=1, max_length=64)]
    serial: DbInt
    checksum: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    status: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- helpers


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def authority(request: web.Request) -> Authority:
    return request.app[AUTHORITY]


async def off_loop(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store call in a worker thread: the event loop keeps serving long-polls meanwhile."""
    return await asyncio.to_thread(partial(func, *args, **kwargs))


def _decode(raw: bytes, model: type[B]) -> B:
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Malformed("malformed_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Malformed("malformed_json", "request body is nested too deeply") from None
    return _decode_value(data, model)


def _decode_value(data: Any, model: type[B]) -> B:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(
            "invalid_body", f"{where}: {first['msg']}", errors=len(exc.errors())
        ) from None
    except RecursionError:
        raise Malformed("malformed_json", "request body is nested too deeply") from None


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_CHUNK = 2000  # lines validated per step: each step holds the GIL for a few milliseconds


def _decode_batch(raw: bytes) -> BatchIn:
    with gc_paused():
        return _decode_batch_steps(raw)


def _decode_batch_steps(raw: bytes) -> BatchIn:
    """The import body, parsed and validated in small steps.

    `json.loads` and pydantic hold the GIL for the whole of a 1M-line body (~4 s), which would
    freeze the event loop even from a worker thread. Here the `lines` array is decoded one
    element at a time and validated `_CHUNK` lines at a time, so the loop gets the GIL back
    between steps; the result and the error messages are those of `_decode`.
    """

    def bad(what: str) -> Malformed:
        return Malformed("malformed_json", f"request body is not valid JSON: {what}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(str(exc)) from None

    def ws(pos: int) -> int:
        return _WS.match(text, pos).end()  # type: ignore[union-attr]

    top: dict[str, Any] = {}
    try:
        pos = ws(0)
        if text[pos : pos + 1] != "{":
            return _decode(raw, BatchIn)  # not an object: the ordinary path says why
        pos = ws(pos + 1)
        closed = text[pos : pos + 1] == "}"
        pos += closed
        while not closed:
            key, pos = _DECODER.raw_decode(text, pos)
            pos = ws(pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise bad(f"expected a key and ':' at char {pos}")
            pos = ws(pos + 1)
            if key == "lines" and text[pos : pos + 1] == "[":
                items: list[Any] = []
                pos = ws(pos + 1)
                if text[pos : pos + 1] == "]":
                    pos += 1
                else:
                    while True:
                        item, pos = _DECODER.raw_decode(text, pos)
                        items.append(item)
                        pos = ws(pos)
                        sep = text[pos : pos + 1]
                        pos = ws(pos + 1)
                        if sep == "]":
                            break
                        if sep != ",":
                            raise bad(f"expected ',' or ']' at char {pos}")
                value: Any = items
            else:
                value, pos = _DECODER.raw_decode(text, pos)
            top[key] = value
            pos = ws(pos)
            sep = text[pos : pos + 1]
            pos = ws(pos + 1)
            if sep == "}":
                closed = True
            elif sep != ",":
                raise bad(f"expected ',' or '}}' at char {pos}")
        if ws(pos) != len(text):
            raise bad(f"extra data at char {pos}")
    except json.JSONDecodeError as exc:
        raise bad(str(exc)) from None
    except RecursionError:
        raise Malformed("malformed_json", "request body is nested too deeply") from None
    lines = top.get("lines")
    if not isinstance(lines, list) or not lines or len(lines) > MAX_IMPORT_LINES:
        return _decode(raw, BatchIn)  # the ordinary path names the problem
    head = _decode_value({**top, "lines": lines[:1]}, BatchIn)
    validated: list[BatchLineIn] = []
    for start in range(0, len(lines), _CHUNK):
        try:
            validated += _BATCH_LINES.validate_python(lines[start : start + _CHUNK])
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ["lines", start + int(first["loc"][0]), *first["loc"][1:]]
            where = ".".join(str(p) for p in loc)
            raise Invalid(
                "invalid_body", f"{where}: {first['msg']}", errors=len(exc.errors())
            ) from None
        except RecursionError:
            raise Malformed("malformed_json", "request body is nested too deeply") from None
    drain(lines)
    return BatchIn.model_construct(
        source=head.source, lines=validated, refused_by_client=head.refused_by_client
    )


async def parse_body(request: web.Request, op: Operation) -> BaseModel:
    assert op.body is not None
    raw = await request.read()
    limit = authority(request).config.api.max_body_bytes
    if not op.large_body and len(raw) > limit:
        raise TooLarge("too_large", f"request body is larger than {limit} bytes")
    if op.body is BatchIn and len(raw) > _PARSE_INLINE_BYTES:
        return await asyncio.to_thread(_decode_batch, raw)
    if len(raw) > _PARSE_INLINE_BYTES:
        return await asyncio.to_thread(_decode, raw, op.body)
    return _decode(raw, op.body)


def path_id(request: web.Request, name: str, what: str) -> int:
    text = request.match_info[name]
    if not _NUMBER.fullmatch(text):
        raise NotFound("not_found", f"{what} ids are numbers, not {text[:40]!r}")
    return int(text)


def entry_id(request: web.Request) -> int:
    return path_id(request, "entry_id", "entry")


def int_query(
    request: web.Request, name: str, default: int, low: int = 0, high: int = MAX_ID
) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    text = text.strip()
    negative = text.startswith("-")
    if not _NUMBER.fullmatch(text.removeprefix("-")):
        raise Malformed("bad_query", f"query parameter {name!r} must be a number")
    value = -int(text[1:]) if negative else int(text)
    if not low <= value <= high:
        raise Malformed("bad_query", f"query parameter {name!r} must be between {low} and {high}")
    return value


def json_ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


routes = RouteTable(parse_body)


# ---------------------------------------------------------------- middleware


def error(exc: AuthorityError) -> web.Response:
    resp = web.json_response(exc.to_dict(), status=http_status(exc))
    if isinstance(exc, Unauthorized):
        resp.headers["WWW-Authenticate"] = 'Bearer realm="cordon"'
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AuthorityError as exc:
        return error(exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return error(TooLarge("too_large", f"request body is larger than {exc.max_size} bytes"))


def authorise(who: Principal, op: Operation) -> None:
    """The route's declared callers, from the one table of roles."""
    if who.kind == "asp":
        if not op.asp:
            raise Forbidden("forbidden", f"ASP {who.name} may not call {op.method} {op.path}")
        return
    if op.permission is None:
        raise Forbidden("forbidden", f"only an ASP token may call {op.method} {op.path}")
    require(who, op.permission)


def make_auth_middleware(max_body: int) -> Callable:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.match_info.apps) > 1:
            # A mounted sub-application (the web console) signs its users in its own way.
            return await handler(request)
        op = routes.operation(request)
        # Small bodies everywhere except the batch import, which has its own larger limit.
        large = op is not None and op.large_body
        if not large and (request.content_length or 0) > max_body:
            raise TooLarge("too_large", f"request body is larger than {max_body} bytes")
        if op is not None and op.public:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        who = None
        if scheme.lower() == "bearer" and token:
            # A small indexed read on its own connection: never waits for a writer.
            who = authority(request).store.authenticate(token.strip())
        if who is None:
            raise Unauthorized("unauthorized", "a valid bearer token is required")
        if op is not None:
            authorise(who, op)
        request[PRINCIPAL] = who
        return await handler(request)

    return auth_middleware


# ---------------------------------------------------------------- service


@routes.route("get", "/healthz", "Liveness and current serial", public=True)
async def healthz(request: web.Request) -> web.Response:
    return json_ok({"ok": True, "serial": authority(request).current_serial()})


@routes.route("get", "/v1/openapi.json", "This document", public=True)
async def openapi_doc(request: web.Request) -> web.Response:
    return json_ok(openapi_document())


def openapi_document() -> dict[str, Any]:
    return openapi(routes.operations)


# ---------------------------------------------------------------- entries


@routes.route(
    "get",
    "/v1/entries",
    "List or search entries",
    permission="read",
    query=("status", "q", "limit", "offset"),
)
async def list_entries(request: web.Request) -> web.Response:
    records = await off_loop(
        authority(request).store.list_entries,
        principal(request),
        status=request.query.get("status"),
        search=request.query.get("q"),
        limit=int_query(request, "limit", 100, 1, 10000),
        offset=int_query(request, "offset", 0),
    )
    return json_ok({"entries": [r.to_dict() for r in records]})


@routes.route(
    "post",
    "/v1/entries",
    "Add an entry (pending until another approver approves it)",
    permission="add",
    body=EntryIn,
)
async def add_entry(request: web.Request, body: EntryIn) -> web.Response:
    record = await off_loop(
        authority(request).store.add_entry,
        principal(request),
        body.value,
        kind=parse_kind(body.kind) if body.kind else None,
        hosting_country=body.hosting_country,
        evidence=body.evidence,
        category=body.category,
        notes=body.notes,
    )
    return json_ok(record.to_dict(), status=201)


@routes.route("get", "/v1/entries/{entry_id}", "Show one entry", permission="read")
async def get_entry(request: web.Request) -> web.Response:
    record = await off_loop(authority(request).store.get, principal(request), entry_id(request))
    return json_ok(record.to_dict())


@routes.route(
    "post",
    "/v1/entries/{entry_id}/approve",
    "Approve a pending entry (not its author, nor an account its author created)",
    permission="approve",
)
async def approve(request: web.Request) -> web.Response:
    auth = authority(request)
    record = await off_loop(auth.store.approve, principal(request), entry_id(request))
    auth.list_changed()
    return json_ok(record.to_dict())


@routes.route(
    "post",
    "/v1/entries/{entry_id}/reject",
    "Reject a pending entry, with reasons",
    permission="approve",
    body=ReasonIn,
)
async def reject(request: web.Request, body: ReasonIn) -> web.Response:
    store = authority(request).store
    record = await off_loop(store.reject, principal(request), entry_id(request), body.reason)
    return json_ok(record.to_dict())


@routes.route(
    "post",
    "/v1/entries/{entry_id}/delist",
    "Request the delisting of a listed entry, with reasons (it stays listed until another "
    "approver confirms)",
    permission="delist",
    body=ReasonIn,
)
async def delist(request: web.Request, body: ReasonIn) -> web.Response:
    store = authority(request).store
    record = await off_loop(store.delist, principal(request), entry_id(request), body.reason)
    return json_ok(record.to_dict(), status=202)


@routes.route(
    "post",
    "/v1/entries/{entry_id}/delist/confirm",
    "Confirm a requested delisting (not its requester, nor an account the requester created)",
    permission="approve",
    body=NoteIn,
)
async def confirm_delist(request: web.Request, body: NoteIn) -> web.Response:
    auth = authority(request)
    record = await off_loop(
        auth.store.confirm_delist, principal(request), entry_id(request), body.note
    )
    auth.list_changed()
    return json_ok(record.to_dict())


@routes.route(
    "post",
    "/v1/entries/{entry_id}/delist/reject",
    "Reject a requested delisting, with reasons: the entry stays listed",
    permission="approve",
    body=ReasonIn,
)
async def reject_delist(request: web.Request, body: ReasonIn) -> web.Response:
    store = authority(request).store
    record = await off_loop(store.reject_delist, principal(request), entry_id(request), body.reason)
    return json_ok(record.to_dict())


# ---------------------------------------------------------------- batches


@routes.route(
    "post",
    "/v1/batches",
    "Import many entries as one batch; refused lines are reported",
    permission="add",
    body=BatchIn,
    large_body=True,
)
async def import_batch(request: web.Request, body: BatchIn) -> web.Response:
    report = await off_loop(_run_import, authority(request).store, principal(request), body)
    return json_ok(report.to_dict(), status=201 if report.batch_id else 200)


def _run_import(store: Store, who: Principal, body: BatchIn) -> ImportReport:
    with gc_paused():
        lines = _import_lines(body)
        drain(body.lines)
        report = store.import_batch(
            who, lines, body.source, refused_by_client=body.refused_by_client
        )
        drain(lines)
    return report


def _import_lines(body: BatchIn) -> list[ImportLine]:
    return [
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


@routes.route("get", "/v1/batches/{batch_id}", "Show a batch", permission="read")
async def get_batch(request: web.Request) -> web.Response:
    batch_id = path_id(request, "batch_id", "batch")
    return json_ok(await off_loop(authority(request).store.get_batch, principal(request), batch_id))


@routes.route(
    "post",
    "/v1/batches/{batch_id}/accept",
    "Accept a batch (not its importer); large batches need confirm_large",
    permission="approve",
    body=BatchAcceptIn,
)
async def accept_batch(request: web.Request, body: BatchAcceptIn) -> web.Response:
    auth = authority(request)
    result = await off_loop(
        auth.store.decide_batch,
        principal(request),
        path_id(request, "batch_id", "batch"),
        accept=True,
        confirm_large=body.confirm_large,
    )
    auth.list_changed()
    return json_ok(result)


@routes.route(
    "post",
    "/v1/batches/{batch_id}/reject",
    "Reject a batch, with reasons",
    permission="approve",
    body=ReasonIn,
)
async def reject_batch(request: web.Request, body: ReasonIn) -> web.Response:
    result = await off_loop(
        authority(request).store.decide_batch,
        principal(request),
        path_id(request, "batch_id", "batch"),
        accept=False,
        reason=body.reason,
    )
    return json_ok(result)


# ---------------------------------------------------------------- lifecycle


@routes.route(
    "post",
    "/v1/entries/{entry_id}/takedown",
    "Record the takedown notice of an entry hosted at home (deadline from the config)",
    permission="add",
    body=TakedownIn,
)
async def record_takedown(request: web.Request, body: TakedownIn) -> web.Response:
    notice = await off_loop(
        authority(request).lifecycle.record_takedown,
        principal(request),
        entry_id(request),
        body.recipient,
        body.sent,
    )
    return json_ok(notice)


@routes.route(
    "post",
    "/v1/entries/{entry_id}/escalate",
    "Send a home-hosted entry still online after its deadline to approval for blocking",
    permission="add",
    body=ReasonIn,
)
async def escalate(request: web.Request, body: ReasonIn) -> web.Response:
    auth, who, eid = authority(request), principal(request), entry_id(request)
    await off_loop(auth.lifecycle.escalate, who, eid, body.reason)
    return json_ok((await off_loop(auth.store.get, who, eid)).to_dict())


@routes.route(
    "post",
    "/v1/entries/{entry_id}/partner-notice",
    "Record a notice to a partner (e.g. the hosting country's hotline)",
    permission="add",
    body=PartnerNoticeIn,
)
async def partner_notice(request: web.Request, body: PartnerNoticeIn) -> web.Response:
    await off_loop(
        authority(request).lifecycle.record_partner_notice,
        principal(request),
        entry_id(request),
        body.partner,
        body.reference,
    )
    return json_ok({"ok": True})


@routes.route(
    "post",
    "/v1/entries/{entry_id}/confirm-removal",
    "Confirm removal at source of an entry whose checks found it gone (delists)",
    permission="delist",
)
async def confirm_removal(request: web.Request) -> web.Response:
    auth, who, eid = authority(request), principal(request), entry_id(request)
    await off_loop(auth.lifecycle.confirm_removal, who, eid)
    auth.list_changed()
    return json_ok((await off_loop(auth.store.get, who, eid)).to_dict())


@routes.route(
    "post",
    "/v1/entries/{entry_id}/reverify",
    "Record a re-verification: a new review date",
    permission="add",
    body=NoteIn,
)
async def reverify(request: web.Request, body: NoteIn) -> web.Response:
    review = await off_loop(
        authority(request).lifecycle.reverify, principal(request), entry_id(request), body.note
    )
    return json_ok({"review_date": review})


@routes.route(
    "get",
    "/v1/entries/{entry_id}/checks",
    "Liveness check history of an entry, newest first",
    permission="read",
    query=("limit",),
)
async def entry_checks(request: web.Request) -> web.Response:
    checks = await off_loop(
        authority(request).lifecycle.checks,
        principal(request),
        entry_id(request),
        int_query(request, "limit", 50, 1, 10000),
    )
    return json_ok({"checks": checks})


@routes.route(
    "post",
    "/v1/lifecycle/run",
    "Run due liveness checks and lapse overdue entries now",
    permission="publish",
)
async def lifecycle_run(request: web.Request) -> web.Response:
    return json_ok(await authority(request).lifecycle_pass())


@routes.route(
    "get",
    "/v1/review",
    "Listed entries past their review date, with the date they lapse",
    permission="read",
)
async def review(request: web.Request) -> web.Response:
    entries = await off_loop(authority(request).lifecycle.review_due, principal(request))
    return json_ok({"entries": entries})


@routes.route(
    "get",
    "/v1/report",
    "Counts by status, country, age; time to removal per month; complaints",
    permission="read",
)
async def report(request: web.Request) -> web.Response:
    auth = authority(request)
    figures = await off_loop(auth.lifecycle.report, principal(request))
    return json_ok({**figures, "feeds": await off_loop(auth.store.feed_report)})


# ---------------------------------------------------------------- publication and oversight


@routes.route(
    "post", "/v1/publish", "Publish the pending changes as the next serial", permission="publish"
)
async def publish(request: web.Request) -> web.Response:
    return json_ok(await authority(request).publish(principal(request)))


@routes.route(
    "get",
    "/v1/status",
    "Serial, counts, pending changes, signing key expiry",
    permission="read",
)
async def status(request: web.Request) -> web.Response:
    return json_ok(await off_loop(authority(request).status))


@routes.route(
    "get",
    "/v1/compliance",
    "Per ASP instance: serial and checksum acked, lag, divergence, overdue, held updates, alarms",
    permission="read",
)
async def compliance(request: web.Request) -> web.Response:
    auth = authority(request)
    return json_ok(await off_loop(auth.store.compliance, principal(request), auth.deadline))


@routes.route("get", "/v1/officers", "List officers", permission="read")
async def list_officers(request: web.Request) -> web.Response:
    return json_ok(
        {"officers": await off_loop(authority(request).store.list_officers, principal(request))}
    )


@routes.route(
    "post",
    "/v1/officers",
    "Create an officer; the answer holds its token, shown once",
    permission="manage",
    body=OfficerIn,
)
async def add_officer(request: web.Request, body: OfficerIn) -> web.Response:
    info, token = await off_loop(
        authority(request).store.add_officer, principal(request), body.name, body.role
    )
    return json_ok({**info, "token": token}, status=201)


@routes.route(
    "post",
    "/v1/officers/{name}/confirm",
    "Confirm a new approver or admin, or a raised role (not by the requester or their accounts)",
    permission="confirm",
)
async def confirm_officer(request: web.Request) -> web.Response:
    store = authority(request).store
    return json_ok(
        await off_loop(store.confirm_officer, principal(request), request.match_info["name"])
    )


@routes.route(
    "post",
    "/v1/officers/{name}/role",
    "Change an officer's role (raising to approver or admin waits for a confirmation)",
    permission="manage",
    body=RoleIn,
)
async def change_role(request: web.Request, body: RoleIn) -> web.Response:
    store = authority(request).store
    return json_ok(
        await off_loop(
            store.change_role,
            principal(request),
            request.match_info["name"],
            body.role,
            body.reason,
        )
    )


@routes.route(
    "post",
    "/v1/officers/{name}/deactivate",
    "Deactivate an officer: every token of theirs is refused from the next request",
    permission="manage",
    body=DeactivateIn,
)
async def deactivate_officer(request: web.Request, body: DeactivateIn) -> web.Response:
    store = authority(request).store
    return json_ok(
        await off_loop(
            store.deactivate_officer, principal(request), request.match_info["name"], body.reason
        )
    )


@routes.route("get", "/v1/asps", "List ASPs", permission="read")
async def list_asps(request: web.Request) -> web.Response:
    return json_ok({"asps": await off_loop(authority(request).store.list_asps, principal(request))})


@routes.route(
    "post",
    "/v1/asps",
    "Create an ASP; the answer holds its token, shown once",
    permission="manage",
    body=AspIn,
)
async def add_asp(request: web.Request, body: AspIn) -> web.Response:
    info, token = await off_loop(
        authority(request).store.add_asp, principal(request), body.name, body.plain_allowed
    )
    return json_ok({**info, "token": token}, status=201)


@routes.route(
    "post",
    "/v1/asps/{name}/deactivate",
    "Deactivate an ASP: its tokens are refused from the next request",
    permission="manage",
    body=DeactivateIn,
)
async def deactivate_asp(request: web.Request, body: DeactivateIn) -> web.Response:
    store = authority(request).store
    return json_ok(
        await off_loop(
            store.deactivate_asp, principal(request), request.match_info["name"], body.reason
        )
    )


@routes.route(
    "get",
    "/v1/tokens",
    "Token ids, owners and state (never the tokens): admins all, others their own",
    permission="read",
    asp=True,
)
async def list_tokens(request: web.Request) -> web.Response:
    store = authority(request).store
    return json_ok({"tokens": await off_loop(store.list_tokens, principal(request))})


@routes.route(
    "post",
    "/v1/tokens",
    "Issue a token (admins: for anyone; others: their own, optionally revoking the current one)",
    permission="read",
    asp=True,
    body=TokenIn,
)
async def issue_token(request: web.Request, body: TokenIn) -> web.Response:
    result = await off_loop(
        authority(request).store.issue_token,
        principal(request),
        officer=body.officer,
        asp=body.asp,
        label=body.label,
        revoke_current=body.revoke_current,
    )
    return json_ok(result, status=201)


@routes.route(
    "post",
    "/v1/tokens/{token_id}/revoke",
    "Revoke a token at once (admins: any; others: their own)",
    permission="read",
    asp=True,
    body=DeactivateIn,
)
async def revoke_token(request: web.Request, body: DeactivateIn) -> web.Response:
    token_id = path_id(request, "token_id", "token")
    store = authority(request).store
    return json_ok(await off_loop(store.revoke_token, principal(request), token_id, body.reason))


@routes.route(
    "get",
    "/v1/audit",
    "Audit records, newest first",
    permission="read",
    query=("limit", "entry"),
)
async def audit_log(request: web.Request) -> web.Response:
    entry = request.query.get("entry")
    records = await off_loop(
        authority(request).store.audit_log,
        principal(request),
        limit=int_query(request, "limit", 100, 1, 10000),
        entry_id=int_query(request, "entry", 0) if entry is not None else None,
    )
    return json_ok({"records": records})


@routes.route(
    "get",
    "/v1/audit/verify",
    "Verify the audit hash chain, and that it passes through published heads (head=N:HASH)",
    permission="read",
    query=("head",),
)
async def audit_verify(request: web.Request) -> web.Response:
    try:
        heads = [parse_head(h) for h in request.query.getall("head", [])[:1000]]
    except ValueError as exc:
        raise Malformed("bad_query", f"head: {exc}") from None
    report = await off_loop(authority(request).store.verify_audit, heads)
    return json_ok(report.__dict__)


# ---------------------------------------------------------------- distribution to ASPs


def _check_edition(request: web.Request) -> str:
    edition = request.match_info["edition"]
    if edition not in EDITIONS:
        raise NotFound("not_found", f"no edition {edition[:40]!r}")
    who = principal(request)
    if edition == "plain" and who.kind == "asp" and not who.plain_allowed:
        raise Forbidden("forbidden", f"ASP {who.name} is not authorised for the plain edition")
    return edition


@routes.route(
    "get",
    "/v1/list/{edition}/notification",
    "Signed notification; long-poll with after=<serial>&wait=<seconds>",
    permission="read",
    asp=True,
    query=("after", "wait"),
)
async def notification(request: web.Request) -> web.StreamResponse:
    edition = _check_edition(request)
    auth = authority(request)
    if request.query.get("after") is not None:
        after = int_query(request, "after", 0)
        wait = int_query(request, "wait", 30, 0, auth.long_poll_max)
        await auth.wait_for_newer(after, wait)
    data = auth.notification_bytes(edition)
    if data is None:
        raise NotFound("not_published", "nothing has been published yet")
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


@routes.route(
    "get",
    "/v1/list/{edition}/{name}",
    "Immutable snapshot or delta file (ETag, conditional GET)",
    permission="read",
    asp=True,
)
async def list_file(request: web.Request) -> web.StreamResponse:
    edition = _check_edition(request)
    name = request.match_info["name"]
    path = authority(request).publish_dir / edition / name
    if not _FILE_NAME.match(name) or not path.is_file():
        raise NotFound("not_found", f"no file {name[:80]!r} in the {edition} edition")
    # Snapshots and deltas never change once written: caches may keep them for ever.
    resp = web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable"})
    resp.content_type = "application/octet-stream"
    return resp


@routes.route(
    "post",
    "/v1/acks",
    "Acknowledge an applied serial and its state checksum",
    asp=True,
    body=AckIn,
)
async def ack(request: web.Request, body: AckIn) -> web.Response:
    await off_loop(
        authority(request).store.record_ack,
        principal(request),
        body.instance,
        body.serial,
        bytes.fromhex(body.checksum),
        body.status,
    )
    return json_ok({"ok": True})


# ---------------------------------------------------------------- complaints


@routes.route(
    "post",
    "/v1/complaints",
    "File a complaint from a stop page (idempotent per key: 201 new, 200 repeat)",
    asp=True,
    body=ComplaintIn,
)
async def submit_complaint(request: web.Request, body: ComplaintIn) -> web.Response:
    result, created = await off_loop(
        authority(request).complaints.submit, principal(request), **body.model_dump()
    )
    return json_ok(result, status=201 if created else 200)


@routes.route(
    "get",
    "/v1/complaints",
    "Officers: list (query: status, limit). ASPs: decisions on their complaints since a time",
    permission="read",
    asp=True,
    query=("status", "limit", "since"),
)
async def list_complaints(request: web.Request) -> web.Response:
    who = principal(request)
    book = authority(request).complaints
    if who.kind == "asp":
        since = int_query(request, "since", 0)
        return json_ok({"complaints": await off_loop(book.decided_since, who, since)})
    status = request.query.get("status")
    limit = int_query(request, "limit", 100, 1, 10000)
    return json_ok({"complaints": await off_loop(book.list, who, status, limit)})


@routes.route(
    "get",
    "/v1/complaints/{complaint_id}",
    "Officers: the full complaint (by C-… id or the visitor's T-… ticket). ASPs: their own",
    permission="read",
    asp=True,
)
async def get_complaint(request: web.Request) -> web.Response:
    who = principal(request)
    book = authority(request).complaints
    cid = request.match_info["complaint_id"]
    if who.kind == "asp":
        return json_ok(await off_loop(book.status_for_asp, who, cid))
    return json_ok(await off_loop(book.get, who, cid))


@routes.route(
    "post",
    "/v1/complaints/{complaint_id}/decide",
    "Decide with written reasons (not by who added or approved the entry); upheld delists",
    permission="decide",
    body=DecisionIn,
)
async def decide_complaint(request: web.Request, body: DecisionIn) -> web.Response:
    auth = authority(request)
    result = await off_loop(
        auth.complaints.decide,
        principal(request),
        request.match_info["complaint_id"],
        body.decision,
        body.reasons,
    )
    if body.decision == "upheld":
        auth.list_changed()
    return json_ok(result)


# ---------------------------------------------------------------- feeds

Hex64 = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{2}:?){31}[0-9a-fA-F]{2}$")]


class FeedIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    source: Literal["cordon", "https", "file"]
    format: Literal["text", "csv", "cordon"] = "text"
    policy: Literal["review", "trusted"] = "review"
    url: Annotated[str, Field(max_length=2000)] = ""
    # Expected refresh period: not refreshed within it, the feed is stale (alarm).
    period_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 24
    cert_sha256: Hex64 | Literal[""] = ""
    public_key: Annotated[str, Field(max_length=1000)] = ""
    signature_url: Annotated[str, Field(max_length=2000)] = ""
    roots: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=8)] = []
    list_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "national"
    edition: Literal["hashed", "plain"] = "hashed"
    token: Annotated[str, Field(max_length=200)] = ""
    max_bytes: Annotated[int, Field(ge=0, le=1 << 31)] = 0

    def checked(self) -> dict:
        """The trust this source needs, or a refusal that says what is missing."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise Invalid("invalid_feed", f"feed {self.name}: {message}")

        if self.source == "cordon":
            need(self.format == "cordon", "a partner Cordon authority's format is 'cordon'")
            need(
                self.url.startswith(("https://", "http://")), "url: the partner's notification URL"
            )
            need(bool(self.roots), "roots: pin the partner's root public key")
            return {
                "roots": self.roots,
                "list_id": self.list_id,
                "edition": self.edition,
                "token": self.token,
                "api": self.url.split("/v1/")[0] if "/v1/" in self.url else "",
            }
        need(self.format != "cordon", "the 'cordon' format comes only from a cordon source")
        if self.source == "file":
            need(not self.url, "a file feed is imported out of band; it has no url")
            return {"max_bytes": self.max_bytes} if self.max_bytes else {}
        need(self.url.startswith(("https://", "http://")), "url must be an https:// address")
        need(
            bool(self.cert_sha256 or self.public_key),
            "pin the server's certificate (cert_sha256) or a signing key (public_key)",
        )
        need(
            self.url.startswith("https://") or bool(self.public_key),
            "a plain http:// feed needs a signature key (public_key)",
        )
        trust = {
            k: v
            for k, v in {
                "cert_sha256": self.cert_sha256.replace(":", "").lower(),
                "public_key": self.public_key.strip(),
                "signature_url": self.signature_url,
                "max_bytes": self.max_bytes,
            }.items()
            if v
        }
        if self.public_key:
            try:
                feed_signature.parse_public_key(self.public_key)
            except feed_signature.SignatureRefused as exc:
                need(False, f"public_key: {exc}")
        return trust


class ExclusionIn(Body):
    value: Annotated[str, Field(min_length=1, max_length=8192)]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


def feed_name(request: web.Request) -> str:
    return check_feed_name(request.match_info["name"])


@routes.route(
    "get", "/v1/feeds", "List feeds: source, policy, freshness, counts", permission="read"
)
async def list_feeds(request: web.Request) -> web.Response:
    store = authority(request).store
    return json_ok({"feeds": await off_loop(store.list_feeds, principal(request))})


@routes.route(
    "post",
    "/v1/feeds",
    "Subscribe to a feed with its own trust (pinned root, certificate or signing key)",
    permission="manage",
    body=FeedIn,
)
async def add_feed(request: web.Request, body: FeedIn) -> web.Response:
    trust = body.checked()
    feed = await off_loop(
        authority(request).store.add_feed,
        principal(request),
        name=body.name,
        source=body.source,
        format=body.format,
        policy=body.policy,
        url=body.url,
        trust=trust,
        period=int(body.period_hours * 3600),
    )
    return json_ok(feed, status=201)


@routes.route(
    "get",
    "/v1/feeds/{name}",
    "Show a feed: trust, state, held items, exclusions",
    permission="read",
)
async def get_feed(request: web.Request) -> web.Response:
    store = authority(request).store
    return json_ok(await off_loop(store.get_feed, principal(request), feed_name(request)))


def _feed_result(auth: Authority, result: FeedUpdate | None) -> web.Response:
    if result is None:
        return json_ok({"changed": False})
    if result.batch_status == "accepted" or result.delisted:
        auth.list_changed()
    return json_ok({"changed": True, **result.to_dict()})


@routes.route(
    "post",
    "/v1/feeds/{name}/refresh",
    "Fetch and verify the feed now; its changes become a batch",
    permission="add",
)
async def refresh_feed(request: web.Request) -> web.Response:
    auth = authority(request)
    name = feed_name(request)
    await off_loop(auth.store.get_feed, principal(request), name)  # exists, caller may read
    try:
        result = await feed_refresh.refresh(auth.store, name)
    except feed_refresh.FeedRefused as exc:
        raise Conflict("feed_refused", f"{exc}; the previous state is kept") from None
    return _feed_result(auth, result)


@routes.route(
    "post",
    "/v1/feeds/{name}/import",
    "Import a file delivered out of band (body: the file; query: sha256 of it)",
    permission="add",
    query=("sha256",),
    large_body=True,
)
async def import_feed(request: web.Request) -> web.Response:
    auth = authority(request)
    name = feed_name(request)
    sha256 = request.query.get("sha256", "")
    if not sha256:
        raise Invalid("missing_checksum", "the file's sha256 is required (query sha256=…)")
    feed = await off_loop(auth.store.feed_config, name)
    if feed["source"] != "file":
        raise Conflict("not_a_file_feed", f"feed {name} is fetched from its source, not imported")
    data = await request.read()
    limit = int(feed["trust"].get("max_bytes", 0)) or feed_formats.MAX_FEED_BYTES
    try:
        with gc_paused():
            result = await off_loop(
                feed_refresh.apply_file,
                auth.store,
                name,
                feed["format"],
                data,
                sha256=sha256,
                limit=limit,
                source=f"import sha256:{sha256[:16]}",
            )
    except feed_formats.FeedFormatError as exc:
        await off_loop(auth.store.record_feed_failure, name, str(exc))
        raise Invalid("feed_refused", f"feed {name}: {exc}; the previous state is kept") from None
    return _feed_result(auth, result)


@routes.route(
    "post",
    "/v1/feeds/{name}/confirm",
    "Second person confirms a feed (its trusted policy takes effect); not its creator",
    permission="confirm",
)
async def confirm_feed(request: web.Request) -> web.Response:
    store = authority(request).store
    return json_ok(await off_loop(store.confirm_feed, principal(request), feed_name(request)))


@routes.route(
    "post",
    "/v1/feeds/{name}/exclusions",
    "Never list a value from this feed (with a reason); delists it if only the feed held it",
    permission="delist",
    body=ExclusionIn,
)
async def exclude_from_feed(request: web.Request, body: ExclusionIn) -> web.Response:
    auth = authority(request)
    result = await off_loop(
        auth.store.exclude, principal(request), feed_name(request), body.value, body.reason
    )
    if result["delisted"]:
        auth.list_changed()
    return json_ok(result, status=201)


def make_app(auth: Authority) -> web.Application:
    app = web.Application(
        client_max_size=auth.config.api.max_import_bytes,
        middlewares=[errors_middleware, make_auth_middleware(auth.config.api.max_body_bytes)],
    )
    app[AUTHORITY] = auth
    routes.add_to(app)

    async def lifecycle(app: web.Application):
        await auth.start()
        yield
        await auth.stop()

    app.cleanup_ctx.append(lifecycle)

    async def on_shutdown(app: web.Application) -> None:
        auth.wake_all()

    app.on_shutdown.append(on_shutdown)
    return app


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
