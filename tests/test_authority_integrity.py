"""Insider attacks on the authority, each as it would be tried, and what stops it.

Sock-puppet approvers, self-confirmed officers, backdated takedowns, an escalator approving
their own escalation, revoked and deactivated credentials, and a rewritten audit log checked
against the heads carried in signed notifications.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority
from test_store import Clock

from blocklist.authority import audit
from blocklist.authority.anchors import AnchorError, head_from_notification
from blocklist.authority.errors import AuthorityError, http_status
from blocklist.authority.lifecycle import Check, Lifecycle, LifecyclePolicy
from blocklist.authority.roles import SYSTEM, Principal
from blocklist.authority.store import Store
from blocklist.notification import open_notification


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "authority.db", clock=Clock(), home_country="FR")
    yield s
    s.close()


def who(store: Store, token: str) -> Principal:
    principal = store.authenticate(token)
    assert principal is not None
    return principal


def refused(code: str, status: int, func, *args, **kwargs) -> AuthorityError:
    with pytest.raises(AuthorityError) as info:
        func(*args, **kwargs)
    assert (info.value.code, http_status(info.value)) == (code, status), info.value
    return info.value


# ---------------------------------------------------------------- four eyes on accounts


def test_an_admin_cannot_make_an_approver_alone(store: Store) -> None:
    admin = who(store, store.bootstrap_admin("root"))
    info, token = store.add_officer(admin, "puppet", "approver")
    assert info["awaiting_confirmation"] and not info["active"]
    assert store.authenticate(token) is None  # inactive until confirmed
    refused("four_eyes", 403, store.confirm_officer, admin, "puppet")
    # An oversight account the admin created is theirs too: it may not confirm.
    _, o_token = store.add_officer(admin, "olga-puppet", "oversight")
    refused("four_eyes", 403, store.confirm_officer, who(store, o_token), "puppet")
    # An oversight account made on the state directory is independent: it may.
    _, olga = store.add_officer(SYSTEM, "olga", "oversight")
    assert store.confirm_officer(who(store, olga), "puppet")["active"] is True
    assert who(store, token).role == "approver"
    actions = [r["action"] for r in store.audit_log(SYSTEM, limit=20)]
    assert "officer.confirm" in actions


def test_raising_a_role_needs_a_second_person(store: Store) -> None:
    admin = who(store, store.bootstrap_admin("root"))
    _, token = store.add_officer(admin, "alice", "officer")
    alice = who(store, token)
    changed = store.change_role(admin, "alice", "admin", reason="promotion")
    assert changed["role"] == "officer" and changed["pending_role"] == "admin"
    assert who(store, token).role == "officer"
    refused("four_eyes", 403, store.confirm_officer, admin, "alice")
    refused("forbidden", 403, store.change_role, alice, "alice", "admin", reason="me")
    refused("four_eyes", 403, store.change_role, admin, "root", "officer", reason="me")
    _, olga = store.add_officer(SYSTEM, "olga", "oversight")
    store.confirm_officer(who(store, olga), "alice")
    assert who(store, token).role == "admin"
    # Lowering needs no confirmation, but the last admin cannot be removed.
    store.change_role(admin, "alice", "officer", reason="back")
    refused("last_admin", 409, store.deactivate_officer, admin, "root", reason="leaving")


def test_puppet_chain_through_a_second_admin_is_refused(store: Store) -> None:
    """Admin A creates admin X (and keeps its token); honest oversight confirms X. X creates
    approver P; A may not confirm P, and P may not approve A's entry: an account A created,
    directly or through accounts it created, is A's."""
    a = who(store, store.bootstrap_admin("root"))
    _, olga = store.add_officer(SYSTEM, "olga", "oversight")
    _, x_token = store.add_officer(a, "x-admin", "admin")
    store.confirm_officer(who(store, olga), "x-admin")
    x = who(store, x_token)
    _, p_token = store.add_officer(x, "p-approver", "approver")
    refused("four_eyes", 403, store.confirm_officer, a, "p-approver")
    store.confirm_officer(who(store, olga), "p-approver")
    entry = store.add_entry(a, "chain-target.example", hosting_country="NL", evidence="e")
    refused("four_eyes", 403, store.approve, who(store, p_token), entry.id)
    # The other way round: an entry P adds may not be approved by A or X, who hold P's token.
    _, q_token = store.add_officer(SYSTEM, "q-approver", "approver")
    theirs = store.add_entry(
        who(store, p_token), "chain-other.example", hosting_country="NL", evidence="e"
    )
    refused("four_eyes", 403, store.approve, x, theirs.id)
    assert store.approve(who(store, q_token), theirs.id).status == "active"


def test_sock_puppet_approver_is_refused(store: Store) -> None:
    """An admin adds an entry, creates an approver account, gets it confirmed by honest
    oversight, and approves the entry with it: refused, whoever confirmed the account."""
    admin = who(store, store.bootstrap_admin("root"))
    _, olga = store.add_officer(SYSTEM, "olga", "oversight")
    entry = store.add_entry(admin, "puppet-target.example", hosting_country="NL", evidence="e")
    _, token = store.add_officer(admin, "puppet", "approver")
    store.confirm_officer(who(store, olga), "puppet")
    puppet = who(store, token)
    error = refused("four_eyes", 403, store.approve, puppet, entry.id)
    assert "created one by the other" in str(error)
    # The same for a batch the admin imported.
    from blocklist.authority.store import ImportLine

    report = store.import_batch(admin, [ImportLine(1, "b.example", None, "NL", "e")])
    refused(
        "four_eyes",
        403,
        store.decide_batch,
        puppet,
        report.batch_id,
        accept=True,
        confirm_large=True,
    )
    # An independent approver may.
    _, bob = store.add_officer(SYSTEM, "bob", "approver")
    assert store.approve(who(store, bob), entry.id).status == "active"


# ---------------------------------------------------------------- takedowns and escalation


def test_backdated_takedown_and_self_escalation(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    _, alice = store.add_officer(SYSTEM, "alice", "officer")
    _, bob = store.add_officer(SYSTEM, "bob", "approver")
    _, carol = store.add_officer(SYSTEM, "carol", "approver")
    alice_p, bob_p, carol_p = who(store, alice), who(store, bob), who(store, carol)
    lifecycle = Lifecycle(store, LifecyclePolicy(takedown_hours=24))
    entry = store.add_entry(alice_p, "home-hosted.example", hosting_country="FR", evidence="e")
    assert entry.status == "takedown"
    # Backdating the notice past its deadline so it can be escalated at once: refused.
    error = refused(
        "invalid_sent",
        422,
        lifecycle.record_takedown,
        bob_p,
        entry.id,
        "host",
        int(clock.t) - 2 * 86400,
    )
    assert "backdating" in str(error)
    # Within the tolerance it is fine; the deadline follows from it.
    notice = lifecycle.record_takedown(bob_p, entry.id, "host", int(clock.t) - 600)
    assert notice["deadline"] == int(clock.t) - 600 + 24 * 3600
    clock.t += 25 * 3600
    lifecycle.record_check(entry.id, Check("online", "HTTP 200", 200))
    lifecycle.escalate(bob_p, entry.id, "still online after the deadline")
    # The approver who escalated may not approve it too.
    error = refused("four_eyes", 403, store.approve, bob_p, entry.id)
    assert "escalated" in str(error)
    assert store.approve(carol_p, entry.id).status == "active"


# ---------------------------------------------------------------- credentials over the API


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


async def test_revoked_token_is_refused_at_once(api: RunningAuthority) -> None:
    status, tokens = await api.call("alice", "GET", "/v1/tokens")
    assert status == 200 and [t["current"] for t in tokens["tokens"]] == [True]
    own = tokens["tokens"][0]["id"]
    # Alice rotates: a new token, the old one revoked in the same step.
    status, rotated = await api.call("alice", "POST", "/v1/tokens", {"revoke_current": True})
    assert status == 201 and rotated["revoked"] == own
    status, _ = await api.call("alice", "GET", "/v1/entries")
    assert status == 401
    api.tokens["alice"] = rotated["token"]
    status, _ = await api.call("alice", "GET", "/v1/entries")
    assert status == 200
    # An admin revokes a leaked token; an officer may not revoke someone else's.
    status, listed = await api.call("admin", "GET", "/v1/tokens")
    bob_token = next(t["id"] for t in listed["tokens"] if t["officer"] == "bob")
    status, _ = await api.call(
        "alice", "POST", f"/v1/tokens/{bob_token}/revoke", {"reason": "not mine"}
    )
    assert status == 403
    status, _ = await api.call(
        "admin", "POST", f"/v1/tokens/{bob_token}/revoke", {"reason": "leaked in a ticket"}
    )
    assert status == 200
    status, _ = await api.call("bob", "GET", "/v1/entries")
    assert status == 401
    status, records = await api.call("olga", "GET", "/v1/audit?limit=5")
    assert {"token.revoke", "token.issue"} <= {r["action"] for r in records["records"]}


async def test_deactivated_officer_and_asp_are_refused_at_once(api: RunningAuthority) -> None:
    status, _ = await api.call("carol", "GET", "/v1/entries")
    assert status == 200
    status, body = await api.call(
        "admin", "POST", "/v1/officers/carol/deactivate", {"reason": "left the unit"}
    )
    assert status == 200 and body["active"] is False
    status, _ = await api.call("carol", "GET", "/v1/entries")
    assert status == 401
    # A new token for a deactivated officer is no way back in.
    status, issued = await api.call("admin", "POST", "/v1/tokens", {"officer": "carol"})
    api.tokens["carol2"] = issued["token"]
    status, _ = await api.call("carol2", "GET", "/v1/entries")
    assert status == 401
    status, _ = await api.call("admin", "POST", "/v1/asps/isp-one/deactivate", {"reason": "gone"})
    assert status == 200
    status, _ = await api.call("isp", "GET", "/v1/list/hashed/notification")
    assert status == 401
    status, body = await api.call("olga", "POST", "/v1/officers/bob/deactivate", {"reason": "x"})
    assert status == 403 and "may not create, deactivate" in body["message"]


# ---------------------------------------------------------------- anchored audit


def rechain_without(db_path: Path, seq_to_drop: int) -> None:
    """What an insider with write access to the database does: drop the triggers, delete a
    record, renumber and re-hash everything after it so the chain is consistent again."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    rows = conn.execute(
        "SELECT seq, time, actor, action, entry_id, detail, reason FROM audit ORDER BY seq"
    ).fetchall()
    conn.execute("BEGIN")
    conn.execute("DELETE FROM audit")
    prev = audit.GENESIS
    for new_seq, row in enumerate((r for r in rows if r[0] != seq_to_drop), start=1):
        h = audit.record_hash(prev, new_seq, *row[1:])
        conn.execute(
            "INSERT INTO audit (seq, time, actor, action, entry_id, detail, reason, prev_hash,"
            " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new_seq, *row[1:], prev, h),
        )
        prev = h
    conn.execute("COMMIT")
    conn.close()


async def test_audit_rewrite_is_caught_by_published_heads(api: RunningAuthority) -> None:
    status, entry = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "a.example", "hosting_country": "NL", "evidence": "e"},
    )
    await api.call("bob", "POST", f"/v1/entries/{entry['id']}/approve")
    status, _ = await api.call("alice", "POST", "/v1/publish")
    assert status == 200
    # What an ASP keeps: the signed notification, with the audit head at its signing.
    status, data = await api.call("isp", "GET", "/v1/list/hashed/notification")
    note = open_notification(data, [api.root], int(time.time()))
    assert note.audit_head is not None and note.audit_head.records >= 8
    anchor = head_from_notification(data, [api.root])
    assert anchor.records == note.audit_head.records
    store = api.authority.store
    assert store.verify_audit([anchor]).ok
    # Later records (after the head) are fine: the log only grows.
    await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "b.example", "hosting_country": "NL", "evidence": "e"},
    )
    assert store.verify_audit([anchor]).ok

    # The insider removes the approval record (seq of entry.approve) and re-chains the rest.
    approve_seq = next(
        r["seq"] for r in store.audit_log(SYSTEM, limit=100) if r["action"] == "entry.approve"
    )
    rechain_without(store.path, approve_seq)
    assert store.verify_audit().ok  # the chain alone is fooled…
    report = store.verify_audit([anchor])  # …the published head is not
    assert not report.ok and "published head" in report.problem
    # Through the API, as oversight would check it.
    status, body = await api.call(
        "olga", "GET", f"/v1/audit/verify?head={anchor.records}:{anchor.hash}"
    )
    assert status == 200 and body["ok"] is False
    status, body = await api.call("olga", "GET", "/v1/audit/verify?head=3:zz")
    assert status == 400


def test_truncated_log_and_forged_anchor(store: Store, tmp_path: Path) -> None:
    admin = who(store, store.bootstrap_admin("root"))
    for n in range(4):
        store.add_entry(admin, f"t{n}.example", hosting_country="NL", evidence="e")
    head = store.audit_head()
    assert head.records == 5 and store.verify_audit([head]).ok
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq >= 4")
    conn.close()
    report = store.verify_audit([head])
    assert not report.ok and "records were removed" in report.problem
    # A notification not signed under the pinned root is no anchor.
    with pytest.raises(AnchorError):
        head_from_notification(b"not a notification", [b"\0" * 32], "x.bin")


# ---------------------------------------------------------------- bad input: 4xx, never 500


async def test_bad_numbers_are_4xx(api: RunningAuthority) -> None:
    for path, expected in [
        ("/v1/entries/²/approve", 404),  # "²".isdigit() is True
        ("/v1/entries/99999999999999999999/approve", 404),  # beyond SQLite's integers
        ("/v1/batches/١٢/accept", 404),  # Arabic-Indic digits
    ]:
        status, body = await api.call("bob", "POST", path)
        assert status == expected and body["error"] == "not_found", (path, body)
    for query in ["limit=-1", "limit=0", "limit=99999999999999999999", "entry=²", "entry=1e3"]:
        status, body = await api.call("olga", "GET", f"/v1/audit?{query}")
        assert status == 400 and body["error"] == "bad_query", (query, body)
    status, body = await api.call("isp", "GET", "/v1/list/hashed/notification?after=²")
    assert status == 400
    for bad in [2**63, -1, 10**30]:
        status, body = await api.call(
            "isp",
            "POST",
            "/v1/acks",
            {"instance": "dns-1", "serial": bad, "checksum": "0" * 64},
        )
        assert status == 422 and "serial" in body["message"], (bad, body)
    status, body = await api.call(
        "isp",
        "POST",
        "/v1/complaints",
        {
            "idempotency_key": "k" * 20,
            "entry_id": 2**64,
            "host": "x.example",
            "role": "visitor",
            "reason": "r",
            "received": 1,
        },
    )
    assert status == 422 and "entry_id" in body["message"]


async def test_deeply_nested_json_is_400(api: RunningAuthority) -> None:
    deep = b'{"instance": "dns-1", "serial": 1, "checksum": "' + b"0" * 64 + b'", "status": '
    deep += b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}"
    resp = await api.client.post(
        "/v1/acks",
        data=deep,
        headers={**api.headers("isp"), "Content-Type": "application/json"},
    )
    # Larger than the body limit: refused before parsing; a nested body within it:
    assert resp.status == 413
    nested = b'{"status": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    resp = await api.client.post(
        "/v1/acks",
        data=nested,
        headers={**api.headers("isp"), "Content-Type": "application/json"},
    )
    body = await resp.json()
    assert resp.status == 400 and body["error"] == "malformed_json", body


async def test_poisoned_ack_is_refused_and_compliance_keeps_working(
    api: RunningAuthority,
) -> None:
    good = {"instance": "dns-1", "serial": 0, "checksum": "0" * 64, "status": {"held": 1}}
    status, _ = await api.call("isp", "POST", "/v1/acks", good)
    assert status == 200
    poisoned = {**good, "status": {"note": "x" * 4100}}
    status, body = await api.call("isp", "POST", "/v1/acks", poisoned)
    assert status == 422 and body["error"] == "too_long" and "4000" in body["message"]
    # The earlier ack stands, whole; every officer still gets the compliance view.
    status, view = await api.call("olga", "GET", "/v1/compliance")
    assert status == 200
    row = next(r for r in view["instances"] if r["instance"] == "dns-1")
    assert row["status"] == {"held": 1} and row["held"] == 1
    # A row cut short before acks were checked (an older authority) does not break it either.
    acks_db = api.authority.store.acks.path
    with sqlite3.connect(acks_db) as raw:
        raw.execute("UPDATE acks SET status = ? WHERE instance = 'dns-1'", ('{"note": "xx',))
    status, view = await api.call("olga", "GET", "/v1/compliance")
    assert status == 200
    row = next(r for r in view["instances"] if r["instance"] == "dns-1")
    assert row["status"] == {"unreadable": True}


async def test_complaint_ticket_and_who_may_decide(api: RunningAuthority) -> None:
    status, entry = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "t.example", "hosting_country": "NL", "evidence": "e"},
    )
    await api.call("bob", "POST", f"/v1/entries/{entry['id']}/approve")
    complaint = {
        "idempotency_key": "ticket-test-0001",
        "entry_id": entry["id"],
        "host": "t.example",
        "role": "site_owner",
        "reason": "mine",
        "received": 1,
        "ticket": "T-AB12-CD34",
    }
    status, filed = await api.call("isp", "POST", "/v1/complaints", complaint)
    assert status == 201
    status, found = await api.call("olga", "GET", "/v1/complaints/T-AB12-CD34")
    assert status == 200 and found["complaint_id"] == filed["complaint_id"]
    assert found["ticket"] == "T-AB12-CD34"
    status, body = await api.call(
        "olga", "POST", "/v1/complaints/T-AB12-CD34/decide", {"decision": "upheld", "reasons": "x"}
    )
    assert status == 403 and "may not decide complaints" in body["message"]
    status, body = await api.call(
        "carol",
        "POST",
        "/v1/complaints/T-AB12-CD34/decide",
        {"decision": "upheld", "reasons": "checked"},
    )
    assert status == 200 and body["status"] == "upheld"
    status, report = await api.call("olga", "GET", "/v1/report")
    assert report["delisted_by_cause"] == {"complaint_upheld": 1}
