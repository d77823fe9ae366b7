"""A manual delisting takes two people: one officer requests it, an independent approver confirms
or rejects it. Until then the entry stays listed and published. Each attack an insider could
try is one test here, through the real API on a loopback socket."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority
from test_complaints import complaint, listed

from blocklist.artefacts import decode_snapshot
from blocklist.digests import digest
from blocklist.notification import open_notification


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


async def request(api: RunningAuthority, who: str, entry: int, reason: str = "gone") -> tuple:
    return await api.call(who, "POST", f"/v1/entries/{entry}/delist", {"reason": reason})


async def confirm(api: RunningAuthority, who: str, entry: int) -> tuple:
    return await api.call(who, "POST", f"/v1/entries/{entry}/delist/confirm", {"note": "checked"})


async def published_digests(api: RunningAuthority) -> set[bytes]:
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200, body
    _, data = await api.call("isp", "GET", "/v1/list/hashed/notification")
    note = open_notification(data, [api.root], int(time.time()))
    _, snap = await api.call("isp", "GET", f"/v1/list/hashed/{note.snapshot.uri}")
    return {e.digest for e in decode_snapshot(snap)[1]}


async def test_one_officer_alone_cannot_unblock(api: RunningAuthority) -> None:
    entry = await listed(api)
    assert digest("blocked.example") in await published_digests(api)
    status, body = await request(api, "alice", entry, "the site owner asked")
    assert status == 202, body
    assert body["status"] == "active" and body["delist_pending"] is True
    assert body["delist_requested_by"] == "alice"
    # Still served as listed: the next publication carries it.
    assert digest("blocked.example") in await published_digests(api)
    _, shown = await api.call("olga", "GET", f"/v1/entries/{entry}")
    assert shown["status"] == "active" and shown["delisted"] is None
    # Asking again does not make it two people.
    status, body = await request(api, "alice", entry, "please")
    assert status == 409 and body["error"] == "delist_pending"
    # An approver alone is no different: their own request waits for someone else.
    other = await listed(api, "other.example")
    status, _ = await request(api, "bob", other)
    assert status == 202
    status, body = await confirm(api, "bob", other)
    assert status == 403 and body["error"] == "four_eyes"
    assert "another approver must confirm" in body["message"]
    assert {digest("blocked.example"), digest("other.example")} <= await published_digests(api)


async def test_an_independent_approver_confirms_and_the_block_ends(api: RunningAuthority) -> None:
    entry = await listed(api)
    await published_digests(api)
    assert (await request(api, "alice", entry, "removed at source, checked by hand"))[0] == 202
    status, body = await confirm(api, "carol", entry)
    assert status == 200, body
    assert body["status"] == "delisted" and body["delist_cause"] == "officer"
    assert (body["delist_requested_by"], body["delisted_by"]) == ("alice", "carol")
    assert body["status_reason"] == "removed at source, checked by hand"
    assert digest("blocked.example") not in await published_digests(api)
    # Every step in the audit log, with who asked, who confirmed and why.
    _, log = await api.call("olga", "GET", f"/v1/audit?entry={entry}")
    records = {r["action"]: r for r in log["records"]}
    asked, done = records["entry.delist_request"], records["entry.delist"]
    assert (asked["actor"], asked["reason"]) == (
        "officer:alice",
        "removed at source, checked by hand",
    )
    assert done["actor"] == "officer:carol"
    assert done["detail"]["requested_by"] == "officer:alice"
    assert done["detail"]["cause"] == "officer" and done["detail"]["note"] == "checked"
    # Confirming twice: a clear 409, nothing changes.
    status, body = await confirm(api, "bob", entry)
    assert status == 409 and body["error"] == "no_delist_request"
    assert "delisted" in body["message"]


async def test_an_account_the_requester_created_cannot_confirm(api: RunningAuthority) -> None:
    entry = await listed(api)
    # The admin makes an approver (oversight confirms the new account, as the rules ask) …
    status, made = await api.call(
        "admin", "POST", "/v1/officers", {"name": "mallory", "role": "approver"}
    )
    assert status == 201, made
    api.tokens["mallory"] = made["token"]
    status, _ = await api.call("olga", "POST", "/v1/officers/mallory/confirm")
    assert status == 200
    # … then asks for a delisting and lets the new account confirm it.
    assert (await request(api, "admin", entry))[0] == 202
    status, body = await confirm(api, "mallory", entry)
    assert status == 403 and body["error"] == "four_eyes"
    assert "the officer who requested the delisting" in body["message"]
    status, body = await api.call(
        "mallory", "POST", f"/v1/entries/{entry}/delist/reject", {"reason": "no"}
    )
    assert status == 403 and body["error"] == "four_eyes"
    _, shown = await api.call("olga", "GET", f"/v1/entries/{entry}")
    assert shown["status"] == "active" and shown["delist_pending"] is True
    # The reverse: the admin cannot confirm a request made through an account they created.
    status, made = await api.call(
        "admin", "POST", "/v1/officers", {"name": "trent", "role": "officer"}
    )
    assert status == 201, made
    api.tokens["trent"] = made["token"]
    other = await listed(api, "other.example")
    assert (await request(api, "trent", other))[0] == 202
    status, body = await confirm(api, "admin", other)
    assert status == 403 and body["error"] == "four_eyes"


async def test_oversight_and_plain_officers_cannot_confirm(api: RunningAuthority) -> None:
    entry = await listed(api)
    assert (await request(api, "bob", entry))[0] == 202
    for who in ("olga", "alice"):  # read-only; no approver role
        status, body = await confirm(api, who, entry)
        assert status == 403 and body["error"] == "forbidden", body
    status, body = await request(api, "olga", await listed(api, "other.example"))
    assert status == 403
    _, shown = await api.call("olga", "GET", f"/v1/entries/{entry}")
    assert shown["status"] == "active"


async def test_only_a_listed_entry_can_be_asked_off_the_list(api: RunningAuthority) -> None:
    _, pending = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "p.example", "hosting_country": "NL", "evidence": "e"},
    )
    status, body = await request(api, "alice", pending["id"])
    assert status == 409 and body["error"] == "not_listed"
    assert "pending" in body["message"] and "rejects" in body["message"]
    await api.call("bob", "POST", f"/v1/entries/{pending['id']}/reject", {"reason": "not CSAM"})
    status, body = await request(api, "alice", pending["id"])
    assert status == 409 and "rejected" in body["message"]
    status, body = await request(api, "alice", 999)
    assert status == 404
    status, body = await confirm(api, "bob", 999)
    assert status == 404
    entry = await listed(api)
    status, body = await confirm(api, "bob", entry)  # nothing was requested
    assert status == 409 and body["error"] == "no_delist_request"
    status, body = await request(api, "alice", entry, "   ")
    assert status == 422 and "reason is required" in body["message"]


async def test_rejected_request_leaves_the_entry_listed(api: RunningAuthority) -> None:
    entry = await listed(api)
    assert (await request(api, "alice", entry))[0] == 202
    status, body = await api.call(
        "carol", "POST", f"/v1/entries/{entry}/delist/reject", {"reason": ""}
    )
    assert status == 422
    status, body = await api.call(
        "carol", "POST", f"/v1/entries/{entry}/delist/reject", {"reason": "still online"}
    )
    assert status == 200 and body["status"] == "active" and body["delist_pending"] is False
    assert digest("blocked.example") in await published_digests(api)
    _, log = await api.call("olga", "GET", f"/v1/audit?entry={entry}")
    rejected = next(r for r in log["records"] if r["action"] == "entry.delist_reject")
    assert rejected["actor"] == "officer:carol" and rejected["reason"] == "still online"
    assert rejected["detail"]["requested_by"] == "officer:alice"
    # A new request may follow; the rejected one cannot be confirmed.
    assert (await request(api, "alice", entry, "new evidence"))[0] == 202
    status, body = await confirm(api, "bob", entry)
    assert status == 200 and body["status_reason"] == "new evidence"


async def test_pending_delistings_are_listed_and_counted(api: RunningAuthority) -> None:
    entry = await listed(api)
    other = await listed(api, "other.example")
    await request(api, "alice", entry)
    _, body = await api.call("olga", "GET", "/v1/entries?status=delist_pending")
    assert [e["id"] for e in body["entries"]] == [entry]
    _, status = await api.call("olga", "GET", "/v1/status")
    assert status["delist_pending"] == 1 and status["entries_by_status"]["active"] == 2
    status_code, body = await api.call("olga", "GET", "/v1/entries?status=nonsense")
    assert status_code == 422 and "delist_pending" in body["message"]
    assert other != entry


async def test_an_upheld_complaint_supersedes_a_pending_request(api: RunningAuthority) -> None:
    entry = await listed(api)
    assert (await request(api, "alice", entry))[0] == 202
    _, filed = await api.call("isp", "POST", "/v1/complaints", complaint(entry))
    status, _ = await api.call(
        "carol",
        "POST",
        f"/v1/complaints/{filed['complaint_id']}/decide",
        {"decision": "upheld", "reasons": "checked"},
    )
    assert status == 200
    _, shown = await api.call("olga", "GET", f"/v1/entries/{entry}")
    assert shown["status"] == "delisted" and shown["delist_cause"] == "complaint_upheld"
    assert shown["delist_pending"] is False
    status, body = await confirm(api, "bob", entry)
    assert status == 409 and body["error"] == "no_delist_request"
    _, log = await api.call("olga", "GET", f"/v1/audit?entry={entry}")
    done = next(r for r in log["records"] if r["action"] == "entry.delist")
    assert done["detail"]["cause"] == "complaint_upheld" and done["detail"]["superseded_request"]
