"""Complaints end to end: stop page -> outbox -> real authority API -> decision -> status page."""

from __future__ import annotations

import contextlib
import html
import re
import socket
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from authority_fixtures import RunningAuthority, start_authority
from test_stoppage_support import (
    HOST,
    complaint_fields,
    fetch,
    fresh_token,
    make_config,
    running,
    status_of,
    submit,
    ticket_and_secret,
    wait_for,
    write_list,
)

from blocklist.config import validate_config
from blocklist.state import Kind
from blocklist.sync.config import SyncConfig
from blocklist.sync.follower import Follower
from signing import format_public_key


@pytest.fixture
async def api(tmp_path: Path):
    running_authority = await start_authority(tmp_path / "authority")
    yield running_authority
    await running_authority.client.close()


def authority_url(api: RunningAuthority) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def add_and_approve(api: RunningAuthority, value: str) -> int:
    status, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "E1"}
    )
    assert status in (200, 201), body
    status, body2 = await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
    assert status == 200, body2
    return body["id"]


async def publish(api: RunningAuthority) -> None:
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200, body


def follower(api: RunningAuthority, tmp_path: Path) -> Follower:
    data = {
        "sync": {
            "authority_url": authority_url(api),
            "token": api.tokens["isp"],
            "root_keys": [format_public_key(api.root)],
            "state_dir": str(tmp_path / "sync-state"),
            "instance": "stop-1",
            "request_timeout": 5,
        }
    }
    return Follower(validate_config(data, SyncConfig, "sync.toml"))


async def authority_complaints(api: RunningAuthority) -> list[dict]:
    status, body = await api.call("olga", "GET", "/v1/complaints?limit=1000")
    assert status == 200, body
    return body["complaints"]


def outbox_rows(path: Path) -> list[sqlite3.Row]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM complaints ORDER BY received, ticket").fetchall()
    finally:
        con.close()


async def status_page(session, stop, ticket: str, secret: str) -> tuple[str, str]:
    status, _, body = await fetch(
        session,
        stop,
        "/complaint/status?lang=en",
        method="POST",
        data={"ticket": ticket, "secret": secret},
    )
    assert status == 200, body
    return status_of(body), body


async def test_complaint_reaches_authority_and_upheld_decision_lifts_the_block(
    api: RunningAuthority, tmp_path: Path
) -> None:
    entry_id = await add_and_approve(api, HOST)
    await publish(api)
    sync = follower(api, tmp_path)
    try:
        await sync.poll_once()  # the real chain: signed artefacts -> verified state.bin
        config = make_config(
            tmp_path,
            format_public_key(api.root),
            sync={"authority_url": authority_url(api), "token": api.tokens["isp"]},
        )
        async with running(config) as stop, aiohttp.ClientSession() as session:
            status, _, body = await fetch(session, stop, "/?lang=en")
            assert status == 451 and f"entry {entry_id}," in body
            fields = complaint_fields(
                stop, token=fresh_token(stop, entry_id=entry_id), reason="Wrongly listed bakery"
            )
            status, _, body = await submit(session, stop, fields)
            assert status == 200
            ticket, secret = ticket_and_secret(body)
            # The received page gives an address on the stop page itself, not on the host.
            follow = html.unescape(re.search(r'id="follow" href="([^"]+)"', body).group(1))
            assert follow == f"{config.status_url}?ticket={ticket}&lang=en"

            async def forwarded() -> bool:
                return (await status_page(session, stop, ticket, secret))[0] == "forwarded"

            await wait_for(forwarded)
            [filed] = await authority_complaints(api)
            assert filed["entry_id"] == entry_id and filed["host"] == HOST
            assert filed["ticket"] == ticket  # so a letter quoting it is found at the authority
            assert filed["role"] == "site_owner" and filed["reason"] == "Wrongly listed bakery"
            assert filed["contact"] == "owner@bakery.example" and filed["language"] == "en"
            [row] = outbox_rows(config.complaints.outbox_path)
            assert row["complaint_id"] == filed["complaint_id"]
            # Once the authority has the text, the stop page keeps no copy of it.
            assert row["reason"] == "" and row["contact"] == ""

            cid = filed["complaint_id"]
            status, body = await api.call(
                "alice",
                "POST",
                f"/v1/complaints/{cid}/decide",
                {"decision": "upheld", "reasons": "x"},
            )
            assert status == 403 and body["error"] == "conflict_of_interest"
            reasons = "The site is a bakery; the listing was a typing error."
            status, body = await api.call(
                "carol",
                "POST",
                f"/v1/complaints/{cid}/decide",
                {"decision": "upheld", "reasons": reasons},
            )
            assert status == 200, body

            async def upheld() -> str | None:
                code, page = await status_page(session, stop, ticket, secret)
                return page if code == "upheld" else None

            page = await wait_for(upheld)
            assert "complaint upheld" in page and reasons in page

            # The upheld complaint delisted the entry; the next publication lifts the block.
            await publish(api)
            await sync.poll_once()
            await wait_for(lambda: stop.service.matcher.lookup(HOST) is None)
            status, _, _ = await fetch(session, stop, "/")
            assert status == 200
            # The host no longer resolves to the stop page; the stable address (the stop page's
            # own address as Host) still shows the decision.
            path = "/" + follow.split("/", 3)[3]
            status, _, body = await fetch(session, stop, path, host="127.0.0.1")
            assert status == 200 and f'value="{ticket}"' in body
            status, _, body = await fetch(
                session,
                stop,
                "/complaint/status?lang=en",
                host="127.0.0.1",
                method="POST",
                data={"ticket": ticket, "secret": secret},
            )
            assert status == 200 and status_of(body) == "upheld"
    finally:
        await sync.close()


@contextlib.asynccontextmanager
async def intake_stub(handler):
    """A loopback stand-in for the authority's complaint intake; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/complaints", handler)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LossyProxy:
    """Passes requests to the authority; loses the answers of the first `lose` complaint POSTs
    after the authority has processed them (the forwarder's worst case)."""

    def __init__(self, upstream: str, lose: int) -> None:
        self.upstream = upstream
        self.lose = lose
        self.posts = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if body:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                request.method, self.upstream + request.path_qs, data=body or None, headers=headers
            ) as resp,
        ):
            data = await resp.read()
            status = resp.status
        if request.method == "POST" and request.path == "/v1/complaints":
            self.posts += 1
            if self.posts <= self.lose:
                return web.Response(status=502, text="answer lost on the way back")
        return web.Response(body=data, status=status, content_type="application/json")


async def test_authority_down_then_lossy_then_up_delivers_each_complaint_once(
    api: RunningAuthority, tmp_path: Path
) -> None:
    entry_id = await add_and_approve(api, HOST)
    # Bound but not listening: connections are refused, and no other program on the machine
    # can take the port (as its outgoing connections could take a port merely found free).
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    config = make_config(
        tmp_path,
        write_list(tmp_path, [(HOST, entry_id, Kind.DOMAIN)]),
        sync={"authority_url": f"http://127.0.0.1:{port}", "token": api.tokens["isp"]},
    )
    async with running(config) as stop, aiohttp.ClientSession() as session:
        tickets = []
        for i in range(4):
            fields = complaint_fields(
                stop, token=fresh_token(stop, entry_id=entry_id), reason=f"complaint number {i}"
            )
            status, _, body = await submit(session, stop, fields)
            assert status == 200
            tickets.append(ticket_and_secret(body))
        # Nothing listens: the complaints wait in the outbox and are retried with backoff.
        await wait_for(
            lambda: all(r["attempts"] >= 2 for r in outbox_rows(config.complaints.outbox_path))
        )
        rows = outbox_rows(config.complaints.outbox_path)
        assert {r["state"] for r in rows} == {"pending"}
        assert all("ClientConnectorError" in r["last_error"] for r in rows)
        for ticket, secret in tickets:
            assert (await status_page(session, stop, ticket, secret))[0] == "received"

        proxy = LossyProxy(authority_url(api), lose=3)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        held.listen()
        server = web.AppRunner(app)
        await server.setup()
        await web.SockSite(server, held).start()
        try:
            await wait_for(
                lambda: all(
                    r["state"] == "forwarded" for r in outbox_rows(config.complaints.outbox_path)
                ),
                timeout=20,
            )
            assert proxy.posts >= 4 + 3  # every lost answer was retried
            filed = await authority_complaints(api)
            reasons = sorted(c["reason"] for c in filed)
            assert reasons == [f"complaint number {i}" for i in range(4)]  # each exactly once
            ids = {r["complaint_id"] for r in outbox_rows(config.complaints.outbox_path)}
            assert ids == {c["complaint_id"] for c in filed}

            # A rejection travels back through the decision poll.
            ticket, secret = tickets[2]
            [row] = [r for r in outbox_rows(config.complaints.outbox_path) if r["ticket"] == ticket]
            status, body = await api.call(
                "carol",
                "POST",
                f"/v1/complaints/{row['complaint_id']}/decide",
                {"decision": "rejected", "reasons": "The material was verified <again>."},
            )
            assert status == 200, body

            async def rejected() -> str | None:
                code, page = await status_page(session, stop, ticket, secret)
                return page if code == "rejected" else None

            page = await wait_for(rejected)
            assert "complaint rejected" in page and "verified &lt;again&gt;." in page
            others = [await status_page(session, stop, t, s) for t, s in tickets[:2]]
            assert [code for code, _ in others] == ["forwarded", "forwarded"]
        finally:
            await server.cleanup()
            held.close()


async def test_a_refusing_authority_marks_the_complaint_undeliverable(
    api: RunningAuthority, tmp_path: Path
) -> None:
    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid_body", "message": "no"}, status=422)

    async with intake_stub(refuse) as url:
        config = make_config(tmp_path, write_list(tmp_path), sync={"authority_url": url})
        async with running(config) as stop, aiohttp.ClientSession() as session:
            _, _, body = await submit(session, stop)
            ticket, secret = ticket_and_secret(body)

            async def undeliverable() -> str | None:
                code, page = await status_page(session, stop, ticket, secret)
                return page if code == "undeliverable" else None

            page = await wait_for(undeliverable)
            assert "could not be passed on to" in page and "Test ISP" in page
            [row] = outbox_rows(config.complaints.outbox_path)
            assert row["attempts"] == 0 and "HTTP 422" in row["last_error"]


@pytest.mark.parametrize("knows_ticket", [True, False])
async def test_the_ticket_goes_to_the_authority(tmp_path: Path, knows_ticket: bool) -> None:
    """The person's ticket is sent as `ticket`; an authority that refuses the field still gets
    the complaint, once, without it."""
    bodies: list[dict] = []

    async def intake(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        if "ticket" in body and not knows_ticket:
            return web.json_response(
                {"error": "invalid_body", "message": "ticket: Extra inputs are not permitted"},
                status=422,
            )
        return web.json_response({"complaint_id": "C-1", "status": "received"}, status=201)

    async with intake_stub(intake) as url:
        config = make_config(tmp_path, write_list(tmp_path), sync={"authority_url": url})
        async with running(config) as stop, aiohttp.ClientSession() as session:
            _, _, body = await submit(session, stop)
            ticket, secret = ticket_and_secret(body)

            async def forwarded() -> bool:
                return (await status_page(session, stop, ticket, secret))[0] == "forwarded"

            await wait_for(forwarded)
            if knows_ticket:
                assert [b["ticket"] for b in bodies] == [ticket]
            else:
                assert [b.get("ticket") for b in bodies] == [ticket, None]
                # Later complaints go without it at once.
                _, _, body = await submit(session, stop)
                assert ticket_and_secret(body)
                await wait_for(lambda: len(bodies) == 3)
                assert "ticket" not in bodies[2]
            [row, *_] = outbox_rows(config.complaints.outbox_path)
            assert row["state"] == "forwarded"
