from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


async def listed(api: RunningAuthority, value: str = "blocked.example") -> int:
    _, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "e"}
    )
    await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
    await api.call("alice", "POST", "/v1/publish")
    return body["id"]


def complaint(entry_id: int | None, key: str = "k" * 20, **extra) -> dict:
    return {
        "idempotency_key": key,
        "entry_id": entry_id,
        "host": "blocked.example",
        "role": "site_owner",
        "reason": "This is my bakery's website; the content was removed last week.",
        "contact": "owner@bakery.example",
        "language": "fr",
        "received": 1_790_000_000,
        **extra,
    }


async def test_intake_is_idempotent(api: RunningAuthority) -> None:
    entry = await listed(api)
    status, first = await api.call("isp", "POST", "/v1/complaints", complaint(entry))
    assert (
        status == 201 and first["status"] == "received" and first["complaint_id"].startswith("C-")
    )
    status, again = await api.call("isp", "POST", "/v1/complaints", complaint(entry))
    assert status == 200 and again == first
    # Another ASP with the same key files its own complaint.
    status, other = await api.call("isp-plain", "POST", "/v1/complaints", complaint(entry))
    assert status == 201 and other["complaint_id"] != first["complaint_id"]
    _, listing = await api.call("olga", "GET", "/v1/complaints")
    assert len(listing["complaints"]) == 2


async def test_intake_validation_and_roles(api: RunningAuthority) -> None:
    status, body = await api.call("alice", "POST", "/v1/complaints", complaint(None))
    assert status == 403
    status, body = await api.call("isp", "POST", "/v1/complaints", complaint(None, key="short"))
    assert status == 422 and "idempotency_key" in body["message"]
    status, body = await api.call("isp", "POST", "/v1/complaints", complaint(None, role="god"))
    assert status == 422
    status, body = await api.call(
        "isp", "POST", "/v1/complaints", complaint(None, reason="x" * 2001)
    )
    assert status == 422
    status, body = await api.call("isp", "POST", "/v1/complaints", complaint(None, reason="   "))
    assert status == 422 and "reason is required" in body["message"]


async def test_decision_rules_and_upheld_delists(api: RunningAuthority) -> None:
    entry = await listed(api)
    _, filed = await api.call("isp", "POST", "/v1/complaints", complaint(entry))
    cid = filed["complaint_id"]
    for who in ("alice", "bob"):  # added, approved
        status, body = await api.call(
            who, "POST", f"/v1/complaints/{cid}/decide", {"decision": "upheld", "reasons": "gone"}
        )
        assert status == 403 and body["error"] == "conflict_of_interest"
    status, body = await api.call(
        "olga", "POST", f"/v1/complaints/{cid}/decide", {"decision": "upheld", "reasons": "gone"}
    )
    assert status == 403
    status, body = await api.call(
        "carol", "POST", f"/v1/complaints/{cid}/decide", {"decision": "upheld", "reasons": ""}
    )
    assert status == 422
    status, body = await api.call(
        "carol",
        "POST",
        f"/v1/complaints/{cid}/decide",
        {"decision": "upheld", "reasons": "Removed at source, checked."},
    )
    assert status == 200 and body["status"] == "upheld" and body["decided_by"] == "carol"
    status, body = await api.call(
        "carol",
        "POST",
        f"/v1/complaints/{cid}/decide",
        {"decision": "rejected", "reasons": "again"},
    )
    assert status == 409
    _, entry_now = await api.call("olga", "GET", f"/v1/entries/{entry}")
    assert entry_now["status"] == "delisted" and cid in entry_now["status_reason"]
    _, pub = await api.call("alice", "POST", "/v1/publish")
    assert pub["serial"] == 2 and pub["removed"] == 1 and pub["entries"] == 0
    # The ASP sees the decision, without officers' names.
    status, seen = await api.call("isp", "GET", f"/v1/complaints/{cid}")
    assert seen["status"] == "upheld" and "decided_by" not in seen
    _, since = await api.call("isp", "GET", "/v1/complaints?since=0")
    assert [c["complaint_id"] for c in since["complaints"]] == [cid]
    # Another ASP cannot read it.
    status, _ = await api.call("isp-plain", "GET", f"/v1/complaints/{cid}")
    assert status == 404


async def test_rejected_keeps_entry(api: RunningAuthority) -> None:
    entry = await listed(api)
    _, filed = await api.call("isp", "POST", "/v1/complaints", complaint(entry))
    cid = filed["complaint_id"]
    status, _body = await api.call(
        "carol",
        "POST",
        f"/v1/complaints/{cid}/decide",
        {"decision": "rejected", "reasons": "Still online today."},
    )
    assert status == 200
    _, entry_now = await api.call("olga", "GET", f"/v1/entries/{entry}")
    assert entry_now["status"] == "active"
    _, audit = await api.call("olga", "GET", f"/v1/audit?entry={entry}")
    assert "complaint.rejected" in [r["action"] for r in audit["records"]]
