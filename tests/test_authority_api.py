import asyncio
import json
import time
from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority

from blocklist.artefacts import check_file, decode_snapshot
from blocklist.authority.api import openapi_document
from blocklist.digests import digest
from blocklist.notification import open_notification


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


async def add_and_approve(api: RunningAuthority, value: str) -> int:
    status, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "c-1"}
    )
    assert status == 201, body
    status, body2 = await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
    assert status == 200 and body2["status"] == "active"
    return body["id"]


async def test_bad_tokens_are_401(api: RunningAuthority) -> None:
    resp = await api.client.get("/v1/entries")
    assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
    resp = await api.client.get("/v1/entries", headers={"Authorization": "Bearer cdn_nope"})
    assert resp.status == 401
    resp = await api.client.get("/v1/entries", headers={"Authorization": api.tokens["alice"]})
    assert resp.status == 401  # no scheme


async def test_roles_are_403(api: RunningAuthority) -> None:
    status, body = await api.call(
        "olga",
        "POST",
        "/v1/entries",
        {"value": "x.example", "hosting_country": "NL", "evidence": "e"},
    )
    assert status == 403 and body["error"] == "forbidden"
    status, _ = await api.call("isp", "GET", "/v1/entries")
    assert status == 403
    status, _ = await api.call("alice", "POST", "/v1/officers", {"name": "eve", "role": "admin"})
    assert status == 403
    status, _ = await api.call("olga", "POST", "/v1/publish")
    assert status == 403


async def test_four_eyes_and_errors(api: RunningAuthority) -> None:
    status, body = await api.call(
        "bob",
        "POST",
        "/v1/entries",
        {"value": "a.example", "hosting_country": "NL", "evidence": "e"},
    )
    entry = body["id"]
    status, body = await api.call("bob", "POST", f"/v1/entries/{entry}/approve")
    assert status == 403 and body["error"] == "four_eyes"
    status, body = await api.call("carol", "POST", f"/v1/entries/{entry}/approve")
    assert status == 200
    status, body = await api.call("carol", "POST", f"/v1/entries/{entry}/approve")
    assert status == 409 and body["error"] == "not_pending"
    status, body = await api.call("carol", "POST", "/v1/entries/999/approve")
    assert status == 404
    status, body = await api.call("carol", "POST", "/v1/entries/abc/approve")
    assert status == 404


async def test_malformed_and_oversized_bodies(api: RunningAuthority) -> None:
    resp = await api.client.post(
        "/v1/entries",
        data=b"{not json",
        headers={**api.headers("alice"), "Content-Type": "application/json"},
    )
    assert resp.status == 400 and (await resp.json())["error"] == "malformed_json"
    status, body = await api.call("alice", "POST", "/v1/entries", {"value": "x.example"})
    assert status == 422 and "hosting_country" in body["message"]
    status, body = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "x.example", "hosting_country": "NL", "evidence": "e", "surprise": 1},
    )
    assert status == 422 and "surprise" in body["message"]
    resp = await api.client.post(
        "/v1/entries",
        data=b"x" * 100_000,
        headers={**api.headers("alice"), "Content-Type": "application/json"},
    )
    assert resp.status == 413


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("co.uk", "public_suffix"),
        ("www.protected.example", "protected_name"),
        ("protected.example", "protected_name"),
        ("192.0.2.1", "ip_literal"),
        ("bad name.example", "invalid_characters"),
        ("http://192.0.2.1/a", "ip_literal"),
    ],
)
async def test_invalid_entries_each_reason(api: RunningAuthority, value: str, reason: str) -> None:
    status, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "e"}
    )
    assert status == 422 and body["reason"] == reason, body


async def test_publish_and_distribution(api: RunningAuthority) -> None:
    await add_and_approve(api, "blocked-one.example")
    await add_and_approve(api, "http://shared.example/album/1/")
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200 and body["serial"] == 1 and body["entries"] == 3, body  # + URLHOST
    status, data = await api.call("isp", "GET", "/v1/list/hashed/notification")
    assert status == 200
    note = open_notification(data, [api.root], int(time.time()))
    assert note.serial == 1 and note.edition == "hashed"
    status, snap = await api.call("isp", "GET", f"/v1/list/hashed/{note.snapshot.uri}")
    assert status == 200
    check_file(snap, note.snapshot.size, note.snapshot.sha256, "snapshot")
    _, state = decode_snapshot(snap)
    assert digest("blocked-one.example") in state and state.values is None
    # Plain edition only for authorised ASPs.
    status, _ = await api.call("isp", "GET", "/v1/list/plain/notification")
    assert status == 403
    status, _ = await api.call("isp-plain", "GET", "/v1/list/plain/notification")
    assert status == 200
    # Conditional GET on immutable files and on the notification.
    resp = await api.client.get(f"/v1/list/hashed/{note.snapshot.uri}", headers=api.headers("isp"))
    etag = resp.headers["ETag"]
    assert "immutable" in resp.headers["Cache-Control"]
    resp = await api.client.get(
        f"/v1/list/hashed/{note.snapshot.uri}",
        headers={**api.headers("isp"), "If-None-Match": etag},
    )
    assert resp.status == 304
    resp = await api.client.get("/v1/list/hashed/notification", headers=api.headers("isp"))
    resp = await api.client.get(
        "/v1/list/hashed/notification",
        headers={**api.headers("isp"), "If-None-Match": resp.headers["ETag"]},
    )
    assert resp.status == 304
    status, _ = await api.call("isp", "GET", "/v1/list/hashed/../../authority.db")
    assert status == 404
    # Nothing pending: no new serial.
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert body == {"serial": 1, "changed": False, "entries": 3}


async def test_long_poll_answers_on_publish(api: RunningAuthority) -> None:
    await add_and_approve(api, "first.example")
    await api.call("alice", "POST", "/v1/publish")

    async def poll() -> tuple[float, int]:
        resp = await api.client.get(
            "/v1/list/hashed/notification?after=1&wait=20", headers=api.headers("isp")
        )
        data = await resp.read()
        return time.monotonic(), open_notification(data, [api.root], int(time.time())).serial

    waiters = [asyncio.create_task(poll()) for _ in range(20)]
    # Every request has reached the server and is parked there; only then is "not answered yet"
    # a finding.
    for _ in range(400):
        if api.authority.long_polls_waiting == 20:
            break
        await asyncio.sleep(0.025)
    assert api.authority.long_polls_waiting == 20
    assert not any(w.done() for w in waiters)
    await add_and_approve(api, "second.example")
    published_at = time.monotonic()
    await api.call("alice", "POST", "/v1/publish")
    results = await asyncio.gather(*waiters)
    assert all(serial == 2 for _, serial in results)
    assert (
        max(t for t, _ in results) - published_at < 15
    )  # answered by the publish, not the timeout


async def test_long_poll_times_out_with_current(api: RunningAuthority) -> None:
    await add_and_approve(api, "first.example")
    await api.call("alice", "POST", "/v1/publish")
    status, data = await api.call("isp", "GET", "/v1/list/hashed/notification?after=1&wait=1")
    assert status == 200 and open_notification(data, [api.root], int(time.time())).serial == 1
    status, _body = await api.call("isp", "GET", "/v1/list/hashed/notification?after=x")
    assert status == 400


async def test_acks_and_compliance(api: RunningAuthority) -> None:
    await add_and_approve(api, "first.example")
    status, pub = await api.call("alice", "POST", "/v1/publish")
    status, _ = await api.call(
        "isp", "POST", "/v1/acks", {"instance": "dns-1", "serial": 1, "checksum": pub["checksum"]}
    )
    assert status == 200
    status, _ = await api.call(
        "isp",
        "POST",
        "/v1/acks",
        {"instance": "dns-2", "serial": 1, "checksum": "0" * 64, "status": {"held": 1}},
    )
    status, body = await api.call("olga", "GET", "/v1/compliance")
    rows = {(r["asp"], r["instance"]): r for r in body["instances"]}
    assert not rows[("isp-one", "dns-1")]["divergent"] and rows[("isp-one", "dns-1")]["lag"] == 0
    assert rows[("isp-one", "dns-2")]["divergent"]
    assert rows[("isp-rpz", None)]["serial"] is None
    status, _ = await api.call(
        "alice", "POST", "/v1/acks", {"instance": "x", "serial": 1, "checksum": pub["checksum"]}
    )
    assert status == 403


async def test_batches_over_api(api: RunningAuthority) -> None:
    lines = [
        {"value": f"b{i}.example", "hosting_country": "DE", "evidence": "bulk-7"} for i in range(5)
    ]
    lines.append({"value": "co.uk", "hosting_country": "DE", "evidence": "bulk-7"})
    status, report = await api.call("alice", "POST", "/v1/batches", {"source": "t", "lines": lines})
    assert status == 201 and report["accepted"] == 5
    assert report["refused"][0]["line"] == 6 and report["refused"][0]["reason"] == "public_suffix"
    batch = report["batch_id"]
    status, body = await api.call("bob", "POST", f"/v1/batches/{batch}/accept", {})
    assert status == 409 and body["error"] == "confirmation_required"
    status, body = await api.call(
        "bob", "POST", f"/v1/batches/{batch}/accept", {"confirm_large": True}
    )
    assert status == 200 and body["status"] == "accepted"
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert body["bulk_change"] is True and body["entries"] == 5
    status, data = await api.call("isp", "GET", "/v1/list/hashed/notification")
    assert open_notification(data, [api.root], int(time.time())).bulk_change


async def test_audit_endpoints(api: RunningAuthority) -> None:
    entry = await add_and_approve(api, "first.example")
    status, body = await api.call("olga", "GET", f"/v1/audit?entry={entry}")
    assert status == 200
    assert [r["action"] for r in body["records"]] == ["entry.approve", "entry.add"]
    status, body = await api.call("olga", "GET", "/v1/audit?entry=abc")
    assert status == 400
    status, body = await api.call("olga", "GET", "/v1/audit/verify")
    assert status == 200 and body["ok"] is True


async def test_auto_publish(tmp_path: Path) -> None:
    api = await start_authority(tmp_path, publication={"auto_publish_seconds": 0.2})
    try:
        await add_and_approve(api, "auto.example")
        for _ in range(100):
            if api.authority.current_serial() == 1:
                break
            await asyncio.sleep(0.05)
        assert api.authority.current_serial() == 1
    finally:
        await api.client.close()


def test_openapi_document_is_current() -> None:
    checked_in = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert checked_in == json.loads(json.dumps(openapi_document())), (
        "docs/openapi.json is stale: run python -m blocklist.authority.api > docs/openapi.json"
    )


async def test_openapi_matches_the_served_routes(api: RunningAuthority) -> None:
    """Every route the running app serves is documented, and nothing documented is missing."""
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in api.client.app.router.routes()
        if r.method != "HEAD"
    }
    status, doc = await api.call("olga", "GET", "/v1/openapi.json")
    assert status == 200
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    # Who may call is the same table the middleware enforces: oversight may read, not add.
    assert "oversight" not in doc["paths"]["/v1/entries"]["post"]["description"]
    assert doc["paths"]["/v1/entries"]["get"]["description"] == "Who may call: any officer."


async def test_renewed_signing_key_is_taken_without_restart(api: RunningAuthority) -> None:
    from blocklist.authority import keyring
    from signing import decode_bundle, key_id, peek_key_id, public_key_raw

    keys = api.authority.config.keys_dir
    await add_and_approve(api, "first.example")
    await api.call("alice", "POST", "/v1/publish")
    _, before = await api.call("isp", "GET", "/v1/list/hashed/notification")
    old_id = peek_key_id(decode_bundle(before, 1 << 20)[1])
    assert api.authority.reload_signer_if_renewed() is False
    renewed = keyring.new_signing_key(keys, keys / "root.key", int(time.time()))
    assert api.authority.reload_signer_if_renewed() is True
    await add_and_approve(api, "second.example")
    await api.call("alice", "POST", "/v1/publish")
    _, after = await api.call("isp", "GET", "/v1/list/hashed/notification")
    new_id = peek_key_id(decode_bundle(after, 1 << 20)[1])
    assert new_id == key_id(public_key_raw(renewed.key)) != old_id
    assert open_notification(after, [api.root], int(time.time())).serial == 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"source": "s", "lines": [{"value": "a.example"}, {"value": "b.example", "line": 7}]}',
        b' { "lines" : [ {"value":"a.example"} ] , "refused_by_client": 3 } ',
        b'{"lines": [' + b'{"value": "x.example"},' * 4500 + b'{"value": 5}]}',  # bad at 4500
        b'{"lines": []}',
        b'{"lines": [{"value": "a.example"}], "surprise": 1}',
        b'{"lines": [{"value": "a.example"},]}',
        b'{"lines": [{"value": "a.example"}] } trailing',
        b'{"lines": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'["not", "an", "object"]',
        b'{"lines": "nope"}',
        b"\xff\xfe",
    ],
)
def test_batch_bodies_parse_in_steps_like_in_one(body: bytes) -> None:
    """The stepwise import parser (which lets the event loop run) agrees with the plain one."""
    from blocklist.authority import api as api_module
    from blocklist.authority.errors import AuthorityError

    def outcome(parse):
        try:
            return "ok", parse().model_dump()
        except AuthorityError as exc:
            return type(exc).__name__, exc.code, str(exc).split(": ")[0]

    plain = outcome(lambda: api_module._decode(body, api_module.BatchIn))
    stepwise = outcome(lambda: api_module._decode_batch(body))
    assert plain[:2] == stepwise[:2]
    if plain[0] == "ok" or plain[1] == "invalid_body":
        assert plain == stepwise
