"""External feeds, end to end on loopback: a partner Cordon authority, an HTTPS file with a
pinned certificate, a minisign-signed file, out-of-band imports; provenance, rails, policies,
removal, exclusions, freshness alarm, and the bad inputs."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority
from feed_fixtures import FileServer, MinisignKey
from tls_fixtures import self_signed

from blocklist.digests import digest
from signing import format_public_key

NO_POLL = {"poll_minutes": 0}
# Most tests start from an empty list, where any feed is a bulk change; one test keeps the limit.
NO_BULK_LIMIT = {"bulk_share": 10}


@pytest.fixture
async def home(tmp_path: Path):
    running = await start_authority(tmp_path / "home", feeds=NO_POLL, rails=NO_BULK_LIMIT)
    yield running
    await running.client.close()


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def add_feed(api: RunningAuthority, **body) -> dict:
    status, data = await api.call("admin", "POST", "/v1/feeds", body)
    assert status == 201, data
    if body.get("policy") == "trusted":  # a second person confirms a trusted feed
        status, data = await api.call("olga", "POST", f"/v1/feeds/{body['name']}/confirm")
        assert status == 200 and data["confirmed_by"], data
    return data


async def import_text(api: RunningAuthority, feed: str, text: str, who: str = "alice"):
    data = text.encode()
    sha = hashlib.sha256(data).hexdigest()
    resp = await api.client.post(
        f"/v1/feeds/{feed}/import?sha256={sha}", data=data, headers=api.headers(who)
    )
    return resp.status, await resp.json()


async def entries(api: RunningAuthority, status: str | None = None) -> dict[str, dict]:
    path = "/v1/entries?limit=10000" + (f"&status={status}" if status else "")
    code, body = await api.call("admin", "GET", path)
    assert code == 200, body
    return {e["value"] or e["digest"]: e for e in body["entries"]}


async def start_cli(
    api: RunningAuthority, *args: str, who: str = "alice", stderr: int = subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`blocklist ARGS` as a real process against the authority on loopback."""
    url = str(api.client.make_url("")).rstrip("/")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blocklist.cli",
        "--url",
        url,
        "--token",
        api.tokens[who],
        *args,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


async def cli(api: RunningAuthority, *args: str, who: str = "alice") -> tuple[int, str, str]:
    proc = await start_cli(api, *args, who=who)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def refresh(api: RunningAuthority, feed: str):
    return await api.call("alice", "POST", f"/v1/feeds/{feed}/refresh")


# ---------------------------------------------------------------- partner Cordon authority


async def partner_publishes(partner: RunningAuthority, *names: str) -> None:
    for name in names:
        status, body = await partner.call(
            "alice",
            "POST",
            "/v1/entries",
            {"value": name, "hosting_country": "NL", "evidence": "p-1"},
        )
        assert status == 201, body
        status, _ = await partner.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
        assert status == 200
    status, body = await partner.call("alice", "POST", "/v1/publish")
    assert status == 200, body


def mirror_copy(partner: RunningAuthority, edition: str) -> dict[str, bytes]:
    directory = partner.authority.publish_dir / edition
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.suffix == ".bin"}


@pytest.mark.parametrize("edition", ["plain", "hashed"])
async def test_partner_authority_signed_then_tampered_then_rolled_back(
    home: RunningAuthority, tmp_path: Path, edition: str
) -> None:
    partner = await start_authority(tmp_path / "partner", feeds=NO_POLL)
    mirror = await FileServer().start()
    try:
        await partner_publishes(partner, "one.partner.example", "two.partner.example")
        mirror.files = mirror_copy(partner, edition)
        await add_feed(
            home,
            name="partner",
            source="cordon",
            format="cordon",
            policy="trusted",
            url=mirror.url + "notification.bin",
            roots=[format_public_key(partner.root)],
            edition=edition,
        )
        status, body = await refresh(home, "partner")
        assert status == 200 and body["added"] == 2 and body["batch_status"] == "accepted", body
        listed = await entries(home, "active")
        assert len(listed) == 2
        one = digest("one.partner.example").hex()
        entry = next(e for e in listed.values() if e["digest"] == one)
        if edition == "plain":
            assert entry["value"] == "one.partner.example"
        else:  # hashed-only: carried as a digest, no plaintext at this authority
            assert entry["value"] == ""
        serial1 = dict(mirror.files)

        # Serial 2 adds a name; then a hostile mirror flips a byte of the snapshot.
        await partner_publishes(partner, "three.partner.example")
        mirror.files = mirror_copy(partner, edition)
        snap = next(n for n in mirror.files if n.startswith("snapshot-") and n.endswith("-2.bin"))
        good = mirror.files[snap]
        mirror.files[snap] = good[:-1] + bytes([good[-1] ^ 1])
        status, body = await refresh(home, "partner")
        assert status == 409 and body["error"] == "feed_refused", body
        assert len(await entries(home, "active")) == 2  # previous state kept
        mirror.files[snap] = good
        status, body = await refresh(home, "partner")
        assert status == 200 and body["added"] == 1, body
        assert len(await entries(home, "active")) == 3

        # Rollback: the mirror serves serial 1 again, genuinely signed, yet older.
        mirror.files = serial1
        status, body = await refresh(home, "partner")
        assert status == 409 and "Rollback" in body["message"], body
        assert len(await entries(home, "active")) == 3

        # A key the feed does not pin: refused.
        other = await start_authority(tmp_path / "other", feeds=NO_POLL)
        try:
            await partner_publishes(other, "x.other.example")
            mirror.files = mirror_copy(other, edition)
            status, body = await refresh(home, "partner")
            assert status == 409, body
        finally:
            await other.client.close()
        status, feed = await home.call("olga", "GET", "/v1/feeds/partner")
        assert feed["failures"] == 2 and feed["last_error"]  # rollback, then the unknown key
        assert feed["trust"]["roots"] == [format_public_key(partner.root)]
        # The home authority still publishes (both editions) with the feed's entries.
        status, body = await home.call("alice", "POST", "/v1/publish")
        assert status == 200, body
    finally:
        await mirror.stop()
        await partner.client.close()


# ---------------------------------------------------------------- HTTPS with a pinned certificate


async def test_https_feed_with_pinned_certificate(home: RunningAuthority, tmp_path: Path) -> None:
    cert, key, fingerprint = self_signed(tmp_path, "feeds")
    _, _, other_fp = self_signed(tmp_path, "impostor")
    server = await FileServer({"list.txt": b"a.feed.example\nb.feed.example\n"}).start((cert, key))
    try:
        await add_feed(
            home,
            name="hotline",
            source="https",
            policy="review",
            url=server.url + "list.txt",
            cert_sha256=fingerprint,
        )
        status, body = await refresh(home, "hotline")
        assert status == 200 and body["added"] == 2 and body["batch_status"] == "pending", body
        # Review policy: an approver (not the admin who configured the feed) accepts.
        status, batch = await home.call(
            "admin", "POST", f"/v1/batches/{body['batch_id']}/accept", {"confirm_large": True}
        )
        assert status == 403 and batch["error"] == "four_eyes"
        status, batch = await home.call(
            "bob", "POST", f"/v1/batches/{body['batch_id']}/accept", {"confirm_large": True}
        )
        assert status == 200 and batch["entries_by_status"] == {"active": 2}
        # Conditional request: an unchanged file costs a 304.
        status, body = await refresh(home, "hotline")
        assert status == 200 and body == {"changed": False}
        assert server.not_modified == 1

        # The same URL pinned to another certificate: refused, nothing changes.
        await add_feed(
            home,
            name="hotline-wrong-pin",
            source="https",
            url=server.url + "list.txt",
            cert_sha256=other_fp,
        )
        status, body = await refresh(home, "hotline-wrong-pin")
        assert status == 409 and "not the pinned" in body["message"], body
        status, feed = await home.call("olga", "GET", "/v1/feeds/hotline-wrong-pin")
        assert feed["counts"] == {} and feed["failures"] == 1
        # No trust at all is refused when the feed is added.
        status, body = await home.call(
            "admin",
            "POST",
            "/v1/feeds",
            {"name": "bare", "source": "https", "url": server.url + "list.txt"},
        )
        assert status == 422 and "pin" in body["message"]
    finally:
        await server.stop()


# ---------------------------------------------------------------- minisign-signed text


async def test_signed_text_feed_bad_signature_keeps_previous_state(
    home: RunningAuthority,
) -> None:
    key = MinisignKey.generate()
    v1 = b"# worst of\nw1.worst.example\nw2.worst.example\n"
    server = await FileServer({"worst.txt": v1, "worst.txt.minisig": key.sign(v1)}).start()
    try:
        await add_feed(
            home,
            name="worst-of",
            source="https",
            policy="trusted",
            url=server.url + "worst.txt",
            public_key=key.public_text,
        )
        status, body = await refresh(home, "worst-of")
        assert status == 200 and body["added"] == 2 and body["batch_status"] == "accepted"
        # The file changes but the signature does not: refused.
        server.files["worst.txt"] = v1 + b"innocent.example\n"
        status, body = await refresh(home, "worst-of")
        assert status == 409 and "bad signature" in body["message"], body
        # Signed by another key: refused too.
        other = MinisignKey.generate()
        server.files["worst.txt.minisig"] = other.sign(server.files["worst.txt"])
        status, body = await refresh(home, "worst-of")
        assert status == 409 and "pins" in body["message"], body
        listed = await entries(home, "active")
        assert set(listed) == {"w1.worst.example", "w2.worst.example"}
        status, feed = await home.call("olga", "GET", "/v1/feeds/worst-of")
        assert feed["counts"]["linked"] == 2 and feed["failures"] == 2
        status, log = await home.call("olga", "GET", "/v1/audit?limit=50")
        actions = [r["action"] for r in log["records"]] if isinstance(log, dict) else []
        assert actions.count("feed.refused") == 2
        accept = next(r for r in log["records"] if r["action"] == "batch.accept")
        assert accept["actor"] == "feed:worst-of" and accept["detail"]["automatic"] is True
    finally:
        await server.stop()


@pytest.mark.tools("minisign")
async def test_minisign_tool_signatures_verify(tmp_path: Path) -> None:
    from blocklist.authority.feedsources import signature

    pub, sec, data = tmp_path / "k.pub", tmp_path / "k.key", tmp_path / "list.txt"
    data.write_bytes(b"a.example\n" * 1000)
    subprocess.run(["minisign", "-G", "-W", "-p", pub, "-s", sec], check=True, capture_output=True)
    subprocess.run(["minisign", "-S", "-s", sec, "-m", data], check=True, capture_output=True)
    sig = (tmp_path / "list.txt.minisig").read_bytes()
    assert signature.verify(data.read_bytes(), sig, pub.read_text()).startswith("timestamp:")
    with pytest.raises(signature.SignatureRefused):
        signature.verify(data.read_bytes() + b"b.example\n", sig, pub.read_text())
    # Our own signer's files verify with the real tool (legacy and prehashed).
    key = MinisignKey.generate()
    (tmp_path / "ours.pub").write_text("untrusted comment: k\n" + key.public_text + "\n")
    for prehash in (True, False):
        (tmp_path / "list.txt.minisig").write_bytes(key.sign(data.read_bytes(), prehash=prehash))
        subprocess.run(
            ["minisign", "-V", "-p", tmp_path / "ours.pub", "-m", data],
            check=True,
            capture_output=True,
        )


# ---------------------------------------------------------------- rails, removal, provenance


async def test_protected_name_in_a_feed_is_held(home: RunningAuthority) -> None:
    await add_feed(home, name="intl", source="file", policy="trusted")
    text = "ok.intl.example\nwww.protected.example\ncdn.www.protected.example\nco.uk\n"
    status, body = await import_text(home, "intl", text)
    assert status == 200 and body["added"] == 1, body
    held = {h["input"]: h["reason"] for h in body["held"]}
    assert held == {
        "www.protected.example": "protected_name",
        "cdn.www.protected.example": "protected_name",
        "co.uk": "public_suffix",
    }
    assert set(await entries(home)) == {"ok.intl.example"}
    status, feed = await home.call("olga", "GET", "/v1/feeds/intl")
    assert feed["counts"] == {"linked": 1, "held": 3, "listed": 1}
    assert {h["value"] for h in feed["held"]} >= {"www.protected.example"}


async def test_feed_removal_delists_with_cause_feed(home: RunningAuthority) -> None:
    await add_feed(home, name="intl", source="file", policy="trusted")
    status, body = await import_text(home, "intl", "a.x.example\nb.x.example\nc.x.example\n")
    assert status == 200 and body["batch_status"] == "accepted"
    status, body = await import_text(home, "intl", "a.x.example\nb.x.example\n")
    assert status == 200 and body["removed"] == 1 and body["delisted"] == 1, body
    all_entries = await entries(home)
    # An update that still lists an entry re-verifies it (its review date moves on).
    a = all_entries["a.x.example"]
    home.authority.store.db.clock = lambda: time.time() + 30 * 86400
    status, body = await import_text(home, "intl", "a.x.example\nb.x.example\n")
    assert status == 200 and body["removed"] == 0
    later = (await entries(home))["a.x.example"]
    assert later["review_date"] >= a["review_date"] + 30 * 86400 - 5
    c = all_entries["c.x.example"]
    assert c["status"] == "delisted" and c["delist_cause"] == "feed"
    assert all_entries["a.x.example"]["status"] == "active"
    status, log = await home.call("olga", "GET", f"/v1/audit?entry_id={c['id']}")
    delist = next(r for r in log["records"] if r["action"] == "entry.delist")
    assert delist["actor"].endswith("feed:intl") and delist["detail"]["cause"] == "feed"


async def test_name_held_by_a_feed_and_a_local_entry_or_two_feeds(
    home: RunningAuthority,
) -> None:
    status, local = await home.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "local.x.example", "hosting_country": "NL", "evidence": "case-9"},
    )
    await home.call("bob", "POST", f"/v1/entries/{local['id']}/approve")
    await add_feed(home, name="one", source="file", policy="trusted")
    await add_feed(home, name="two", source="file", policy="trusted")
    status, body = await import_text(home, "one", "local.x.example\nshared.x.example\n")
    assert body["linked"] == 1 and body["added"] == 1, body
    status, body = await import_text(home, "two", "shared.x.example\n")
    assert body["linked"] == 1 and body["added"] == 0, body
    # Feed one drops both: the local entry stays, the shared one is still held by feed two.
    status, body = await import_text(home, "one", "")
    assert body["removed"] == 2 and body["delisted"] == 0, body
    listed = await entries(home, "active")
    assert {"local.x.example", "shared.x.example"} <= set(listed)
    assert listed["local.x.example"]["id"] == local["id"]
    # Feed two drops the shared one: now nobody holds it.
    status, body = await import_text(home, "two", "")
    assert status == 200 and body["delisted"] == 1
    assert (await entries(home))["shared.x.example"]["delist_cause"] == "feed"
    _status, report = await home.call("olga", "GET", "/v1/report")
    assert report["feeds"] == {"one": {}, "two": {}}


async def test_exclusion_per_feed_is_audited_and_sticks(home: RunningAuthority) -> None:
    await add_feed(home, name="intl", source="file", policy="trusted")
    await import_text(home, "intl", "wrong.x.example\nright.x.example\n")
    status, body = await home.call(
        "alice", "POST", "/v1/feeds/intl/exclusions", {"value": "wrong.x.example", "reason": ""}
    )
    assert status == 422
    status, body = await home.call(
        "alice",
        "POST",
        "/v1/feeds/intl/exclusions",
        {"value": "WRONG.x.example", "reason": "verified lawful, ticket 12"},
    )
    # A manual delisting: requested now, confirmed by a second person.
    assert status == 201 and body["delisted"] == 0 and body["delist_request"], body
    entry_id = body["delist_request"]["entry_id"]
    assert "wrong.x.example" in await entries(home, "active")
    status, _ = await home.call("alice", "POST", f"/v1/entries/{entry_id}/delist/confirm", {})
    assert status == 403
    status, confirmed = await home.call("bob", "POST", f"/v1/entries/{entry_id}/delist/confirm", {})
    assert status == 200 and confirmed["status"] == "delisted", confirmed
    # The next update still lists it: it stays excluded.
    status, body = await import_text(home, "intl", "wrong.x.example\nright.x.example\n")
    assert body["added"] == 0 and body["removed"] == 0
    listed = await entries(home, "active")
    assert set(listed) == {"right.x.example"}
    status, feed = await home.call("olga", "GET", "/v1/feeds/intl")
    assert feed["exclusions"][0]["reason"] == "verified lawful, ticket 12"
    assert feed["exclusions"][0]["excluded_by"] == "alice"
    status, log = await home.call("olga", "GET", "/v1/audit?limit=20")
    assert any(r["action"] == "feed.exclude" for r in log["records"])


async def test_hashed_only_csv_feed_and_trusted_bulk_limit(home: RunningAuthority) -> None:
    await add_feed(home, name="hashes", source="file", format="csv", policy="trusted")
    home.authority.store.bulk_share = 0.10  # the default limit
    rows = ["id,sha256"] + [f"H{i},{digest(f'h{i}.x.example').hex()}" for i in range(5)]
    # Over the bulk-share limit against an empty list: a trusted feed still waits.
    status, body = await import_text(home, "hashes", "\n".join(rows) + "\n")
    assert status == 200 and body["batch_status"] == "pending", body
    status, batch = await home.call("bob", "GET", f"/v1/batches/{body['batch_id']}")
    assert batch["size"] == 5
    status, _ = await home.call(
        "bob", "POST", f"/v1/batches/{body['batch_id']}/accept", {"confirm_large": True}
    )
    assert status == 200
    listed = await entries(home, "active")
    assert len(listed) == 5 and all(e["value"] == "" for e in listed.values())


# ---------------------------------------------------------------- freshness, polling, backoff


async def test_poller_refreshes_backs_off_and_raises_freshness_alarm(tmp_path: Path) -> None:
    poll = {"poll_minutes": 0.005, "max_backoff_minutes": 0.02, "check_seconds": 0.05}
    api = await start_authority(tmp_path / "home", feeds=poll, rails=NO_BULK_LIMIT)
    server = await FileServer({"l.txt": b"p.x.example\n"}).start()
    key = MinisignKey.generate()
    server.files["l.txt.minisig"] = key.sign(server.files["l.txt"])
    store = api.authority.store
    try:
        await add_feed(
            api,
            name="polled",
            source="https",
            policy="trusted",
            url=server.url + "l.txt",
            public_key=key.public_text,
            period_hours=1,
        )

        async def refreshed() -> bool:
            return (await api.call("olga", "GET", "/v1/feeds/polled"))[1][
                "last_refresh"
            ] is not None

        await wait_for(refreshed)
        assert "p.x.example" in await entries(api, "active")

        async def conditional() -> bool:
            return server.not_modified >= 1

        await wait_for(conditional)  # the next poll asked with If-None-Match
        status, feed = await api.call("olga", "GET", "/v1/feeds/polled")
        assert status == 200 and feed["stale"] is False
        # The provider goes away: polls fail and back off; an hour later the alarm is raised.
        await server.stop()

        async def failing() -> bool:
            return (await api.call("olga", "GET", "/v1/feeds/polled"))[1]["failures"] >= 2

        await wait_for(failing)
        real = store.db.clock
        store.db.clock = lambda: real() + 2 * 3600

        async def alarm() -> bool:
            log = (await api.call("olga", "GET", "/v1/audit?limit=1000"))[1]
            return any(r["action"] == "feed.stale" for r in log["records"])

        await wait_for(alarm)
        _status, feed = await api.call("olga", "GET", "/v1/feeds/polled")
        assert feed["stale"] is True
        assert "p.x.example" in await entries(api, "active")  # a stale feed keeps its entries
    finally:
        await server.stop()
        await api.client.close()


def test_backoff_doubles_up_to_the_limit() -> None:
    from blocklist.authority.feedsources.poller import PollPolicy, due

    policy = PollPolicy(interval=60, max_backoff=600, tick=1)
    feed = {"source": "https", "last_attempt": 1000, "failures": 0}
    assert not due(feed, 1059, policy) and due(feed, 1060, policy)
    feed["failures"] = 2
    assert not due(feed, 1239, policy) and due(feed, 1240, policy)
    feed["failures"] = 10
    assert not due(feed, 1599, policy) and due(feed, 1600, policy)
    assert not due({**feed, "source": "file"}, 10**9, policy)


# ---------------------------------------------------------------- large import, bad inputs


async def test_100k_feed_imported_as_one_batch_with_progress_bar(
    home: RunningAuthority, tmp_path: Path
) -> None:
    await add_feed(home, name="big", source="file", policy="review")
    path = tmp_path / "big.txt"
    path.write_text("".join(f"n{i}.big.example\n" for i in range(100_000)))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    master, slave = pty.openpty()
    # A terminal of 80 columns (a fresh pty has 0, and the bar would be cut to nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = await start_cli(
        home, "feed", "import", str(path), "--feed", "big", "--sha256", sha, stderr=slave
    )
    os.close(slave)

    def read_tty() -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return out
            if not chunk:
                return out
            out += chunk

    tty, (stdout, _) = await asyncio.gather(asyncio.to_thread(read_tty), proc.communicate())
    os.close(master)
    assert proc.returncode == 0, (stdout, tty)
    assert b"reading big.txt" in tty  # the progress bar
    assert b"100000 items; 100000 added" in stdout
    status, feed = await home.call("olga", "GET", "/v1/feeds/big")
    assert feed["counts"]["linked"] == 100_000
    status, log = await home.call("olga", "GET", "/v1/audit?limit=5")
    imports = [r for r in log["records"] if r["action"] == "batch.import"]
    assert len(imports) == 1 and imports[0]["detail"]["entries"] == 100_000
    batch = imports[0]["detail"]["batch"]
    status, body = await home.call(
        "bob", "POST", f"/v1/batches/{batch}/accept", {"confirm_large": True}
    )
    assert status == 200 and body["entries_by_status"] == {"active": 100_000}


async def test_bad_inputs_refused_with_clear_errors(home: RunningAuthority, tmp_path: Path) -> None:
    await add_feed(home, name="intl", source="file", policy="trusted", max_bytes=4096)
    # Malformed lines: each refused with its line number, the rest applied.
    status, body = await import_text(
        home, "intl", "good.x.example\nnot a domain!\n1.2.3.4\nalso.x.example\n"
    )
    assert status == 200 and body["added"] == 2, body
    assert [(r["line"], r["reason"]) for r in body["refused"]] == [
        (2, "invalid_characters"),
        (3, "ip_literal"),
    ]
    raw = b"bin.x.example\n\xff\xfe\n"
    resp = await home.client.post(
        f"/v1/feeds/intl/import?sha256={hashlib.sha256(raw).hexdigest()}",
        data=raw,
        headers=home.headers("alice"),
    )
    body = await resp.json()
    assert resp.status == 200 and body["refused"][0]["reason"] == "encoding", body
    # Oversized: beyond the feed's limit, refused whole; the previous state is kept.
    big = b"".join(b"o%d.x.example\n" % i for i in range(1000))
    resp = await home.client.post(
        f"/v1/feeds/intl/import?sha256={hashlib.sha256(big).hexdigest()}",
        data=big,
        headers=home.headers("alice"),
    )
    body = await resp.json()
    assert resp.status == 422 and "more than the 4096 allowed" in body["message"], body
    # Wrong checksum: refused whole.
    resp = await home.client.post(
        f"/v1/feeds/intl/import?sha256={'0' * 64}",
        data=b"evil.x.example\n",
        headers=home.headers("alice"),
    )
    body = await resp.json()
    assert resp.status == 422 and "checksum mismatch" in body["message"], body
    listed = await entries(home, "active")
    assert set(listed) == {"bin.x.example"}  # each import is the feed's whole content
    # The CLI refuses a wrong checksum before sending anything.
    path = tmp_path / "f.txt"
    path.write_bytes(b"cli.x.example\n")
    proc = await start_cli(
        home, "feed", "import", str(path), "--feed", "intl", "--sha256", "ab" * 32
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 1 and b"checksum mismatch" in err and b"nothing was sent" in err
    # A refresh of an out-of-band feed, an unknown feed, a bad name, an oversized CSV header.
    status, body = await refresh(home, "intl")
    assert status == 409 and "out of band" in body["message"]
    status, body = await refresh(home, "nope")
    assert status == 404
    status, body = await home.call(
        "admin", "POST", "/v1/feeds", {"name": "Bad Name!", "source": "file"}
    )
    assert status == 422
    # Only an admin adds feeds; oversight cannot refresh.
    status, body = await home.call("alice", "POST", "/v1/feeds", {"name": "x", "source": "file"})
    assert status == 403
    status, body = await home.call("olga", "POST", "/v1/feeds/intl/refresh")
    assert status == 403


async def test_feed_commands(home: RunningAuthority, tmp_path: Path) -> None:
    code, out, err = await cli(
        home, "feed", "add", "interpol", "--source", "file", "--policy", "trusted", who="admin"
    )
    assert code == 0 and "Feed interpol added (file, text, trusted)" in out, err
    assert "blocklist feed confirm interpol" in out
    code, out, err = await cli(home, "feed", "confirm", "interpol", who="admin")
    assert code == 1 and "must confirm it" in err
    code, out, err = await cli(home, "feed", "confirm", "interpol", who="olga")
    assert code == 0 and "trusted policy is in effect" in out, err
    code, out, err = await cli(home, "feed", "add", "interpol", "--source", "file", who="admin")
    assert code == 1 and "exists already" in err
    code, out, err = await cli(
        home,
        "feed",
        "add",
        "h",
        "--source",
        "https",
        "--feed-url",
        "https://127.0.0.1:1/l.txt",
        who="admin",
    )
    assert code == 1 and "pin the server" in err
    path = tmp_path / "worst.txt"
    path.write_bytes(b"w.x.example\nwww.protected.example\nbad name\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    code, out, err = await cli(
        home, "feed", "import", str(path), "--feed", "interpol", "--sha256", sha
    )
    assert code == 0, err
    assert "1 added" in out and "1 held by the rails" in out and "accepted automatically" in out
    assert "protected_name" in out and "1 lines refused" in out
    code, out, err = await cli(home, "feed", "list", who="olga")
    assert code == 0 and "interpol" in out and "fresh" in out
    code, out, err = await cli(home, "feed", "show", "interpol", who="olga")
    assert code == 0 and "www.protected.example" in out and "(imported out of band)" in out
    code, out, err = await cli(
        home, "feed", "exclude", "interpol", "w.x.example", "--reason", "lawful since 2026-11"
    )
    assert code == 0 and "excluded from feed interpol; delisting of entry" in out, err
    code, out, err = await cli(home, "feed", "refresh", "interpol")
    assert code == 1 and "out of band" in err
    code, out, err = await cli(home, "report", who="olga")
    assert code == 0 and "Per feed:" in out
    row = next(line for line in out.splitlines() if line.startswith("interpol"))
    assert row.split() == ["interpol", "0", "0", "1", "1"]  # items, listed, held, excluded
    for command in ("add", "confirm", "list", "show", "refresh", "exclude", "import"):
        code, out, err = await cli(home, "feed", command, "--help")
        assert code == 0 and "usage: blocklist feed " + command in out


async def test_trusted_feed_needs_a_second_person(home: RunningAuthority) -> None:
    """One admin cannot make a source of their own list: until another admin or oversight
    officer confirms the feed, its batches wait for an approver like any import."""
    status, _ = await home.call(
        "admin", "POST", "/v1/feeds", {"name": "own", "source": "file", "policy": "trusted"}
    )
    assert status == 201
    status, body = await import_text(home, "own", "mine.x.example\n", who="admin")
    assert status == 200 and body["batch_status"] == "pending", body
    assert await entries(home, "active") == {}
    status, body = await home.call("admin", "POST", "/v1/feeds/own/confirm")
    assert status == 403 and body["error"] == "four_eyes"
    status, body = await home.call("alice", "POST", "/v1/feeds/own/confirm")
    assert status == 403
    status, body = await home.call("olga", "POST", "/v1/feeds/own/confirm")
    assert status == 200
    status, body = await home.call("olga", "POST", "/v1/feeds/own/confirm")
    assert status == 409
    status, body = await import_text(home, "own", "mine.x.example\nnext.x.example\n")
    assert body["batch_status"] == "accepted" and body["added"] == 1, body
    status, log = await home.call("olga", "GET", "/v1/audit?limit=50")
    actions = [r["action"] for r in log["records"]]
    assert "feed.unconfirmed" in actions and "feed.confirm" in actions


def test_schema_migration_adds_feeds_to_an_existing_database(tmp_path: Path) -> None:
    from blocklist.authority.db import MIGRATIONS, Database, schema_version
    from blocklist.authority.store import Principal, Store

    path = tmp_path / "authority.db"
    old = Database(path, migrations=MIGRATIONS[:4])
    with old.write() as conn:
        conn.execute("INSERT INTO officers (name, role, created) VALUES ('ada', 'admin', 0)")
    old.close()
    store = Store(path)
    try:
        with store.db.read() as conn:
            assert schema_version(conn) == len(MIGRATIONS) == 7
        ada = Principal("officer", 1, "ada", "admin")
        feed = store.add_feed(
            ada, name="intl", source="file", format="text", policy="review", period=3600
        )
        assert feed["name"] == "intl" and feed["stale"] is False
    finally:
        store.close()


async def test_partner_api_grants_the_edition(home: RunningAuthority, tmp_path: Path) -> None:
    """Straight from the partner's API with the ASP token it issued: the plain edition only
    with a token allowed it; the token goes to the partner's own origin."""
    partner = await start_authority(tmp_path / "partner", feeds=NO_POLL)
    try:
        # A URL entry: the partner's list also carries its derived URLHOST entry.
        await partner_publishes(partner, "api.partner.example", "shared.partner.example/bad/")
        base = str(partner.client.make_url("")).rstrip("/")
        for name, token in (("p-hashed", "isp"), ("p-plain", "isp-plain"), ("p-denied", "isp")):
            edition = "hashed" if name == "p-hashed" else "plain"
            await add_feed(
                home,
                name=name,
                source="cordon",
                format="cordon",
                url=f"{base}/v1/list/{edition}/notification",
                roots=[format_public_key(partner.root)],
                edition=edition,
                token=partner.tokens[token],
            )
        status, body = await refresh(home, "p-hashed")
        assert status == 200 and body["added"] == 2, body  # the URLHOST entry is not taken
        status, body = await refresh(home, "p-plain")
        assert status == 200 and body["linked"] == 2, body  # the same entries, by digest
        # The home authority publishes them (a digest-only URL entry gets no URLHOST).
        status, body = await home.call("alice", "POST", "/v1/publish")
        assert status == 200, body
        status, body = await refresh(home, "p-denied")
        assert status == 409 and "403" in body["message"], body
        status, feed = await home.call("olga", "GET", "/v1/feeds/p-plain")
        assert feed["trust"]["token"] == "(set)"
        assert partner.tokens["isp-plain"] not in str(feed)
    finally:
        await partner.client.close()
