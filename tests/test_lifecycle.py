"""Block until removal: the lifecycle state machine on a real SQLite store and a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blocklist.authority.errors import http_status
from blocklist.authority.lifecycle import DAY, HOUR, Check, Lifecycle, LifecyclePolicy
from blocklist.authority.store import SYSTEM, AuthorityError, Principal, Store
from blocklist.digests import digest

# Weak: the site's own word, which a cloaking site gives the checker alone.
GONE = Check("gone", "HTTP 404", 404, evidence="http")
# Strong: the name is gone from every one of two or more resolvers.
STRONG = Check("gone", "NXDOMAIN", evidence="dns")
ONLINE = Check("online", "HTTP 200", 200)
UNKNOWN = Check("unknown", "connect timeout")


class Clock:
    def __init__(self) -> None:
        self.t = 1_790_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(tmp_path: Path, clock: Clock, **policy) -> tuple[Store, Lifecycle, dict[str, Principal]]:
    store = Store(tmp_path / "a.db", clock=clock, home_country="FR")
    people = {}
    for name, role in [("alice", "officer"), ("bob", "approver"), ("olga", "oversight")]:
        info, _ = store.add_officer(SYSTEM, name, role)
        people[name] = Principal("officer", info["id"], name, role)
    return store, Lifecycle(store, LifecyclePolicy(**policy)), people


def listed(store: Store, people: dict, value: str, country: str = "NL") -> int:
    entry = store.add_entry(people["alice"], value, hosting_country=country, evidence="e").id
    store.approve(people["bob"], entry)
    return entry


def gone_times(
    lc: Lifecycle, clock: Clock, entry: int, n: int, gap: float = 13 * HOUR, check: Check = STRONG
) -> list:
    out = []
    for _ in range(n):
        out.append(lc.record_check(entry, check))
        clock.advance(gap)
    return out


def test_k_gone_checks_delist_automatically(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    entry = listed(store, people, "blocked.example")
    changes = store.pending_changes()
    store.mark_published(SYSTEM, changes, serial=1, session="s", checksum=b"\0" * 32, entry_count=1)
    assert gone_times(lc, clock, entry, 3) == [None, None, "removed_at_source"]
    record = store.get(people["olga"], entry)
    assert record.status == "delisted" and record.delist_cause == "removed_at_source"
    assert "3 consecutive checks" in record.status_reason
    assert store.pending_changes().removed == [digest("blocked.example")]
    actions = [r["action"] for r in store.audit_log(people["olga"], entry_id=entry)]
    assert actions[0] == "entry.delist"


def test_weak_evidence_never_delists_alone(tmp_path: Path, clock: Clock) -> None:
    """A cloaking site answers 404 to the checker: with the "auto" policy the entry still
    only goes to removal_pending, listed until an officer confirms."""
    store, lc, people = make(tmp_path, clock)
    entry = listed(store, people, "cloaking.example")
    assert gone_times(lc, clock, entry, 3, check=GONE) == [None, None, "removal_pending"]
    record = store.get(people["olga"], entry)
    assert record.status == "removal_pending" and "weak" in record.status_reason
    assert store.pending_changes().removed == []
    # A weak "gone" in a strong streak breaks the streak: K strong in a row are needed.
    other = listed(store, people, "mixed.example")
    gone_times(lc, clock, other, 2)
    assert lc.record_check(other, GONE) == "removal_pending"
    # Refused connections and single-resolver NXDOMAIN are weak too.
    for weak in (
        Check("gone", "connection refused", evidence="refused"),
        Check("gone", "NXDOMAIN", evidence="dns-one"),
    ):
        e = listed(store, people, f"weak-{weak.evidence}.example")
        assert gone_times(lc, clock, e, 3, check=weak)[-1] == "removal_pending"


def test_gone_checks_too_close_count_once(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    entry = listed(store, people, "blocked.example")
    assert gone_times(lc, clock, entry, 5, gap=HOUR) == [None] * 5
    assert store.get(people["olga"], entry).gone_count == 1
    assert len(lc.checks(people["olga"], entry)) == 5  # every check is kept as history


def test_flapping_site_resets_the_count(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    entry = listed(store, people, "flapping.example")
    gone_times(lc, clock, entry, 2)
    lc.record_check(entry, ONLINE)
    clock.advance(13 * HOUR)
    assert gone_times(lc, clock, entry, 2) == [None, None]
    assert store.get(people["olga"], entry).status == "active"
    lc.record_check(entry, UNKNOWN)  # changes nothing
    clock.advance(13 * HOUR)
    assert lc.record_check(entry, STRONG) == "removed_at_source"


def test_confirm_policy_and_back_online(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock, removal_policy="confirm")
    entry = listed(store, people, "blocked.example")
    store.mark_published(
        SYSTEM, store.pending_changes(), serial=1, session="s", checksum=b"\0" * 32, entry_count=1
    )
    assert gone_times(lc, clock, entry, 3)[-1] == "removal_pending"
    assert store.get(people["olga"], entry).status == "removal_pending"
    assert store.pending_changes().removed == []  # still blocked until confirmed
    assert lc.record_check(entry, ONLINE) == "back_online"
    assert store.get(people["olga"], entry).status == "active"
    clock.advance(13 * HOUR)
    gone_times(lc, clock, entry, 3)
    with pytest.raises(AuthorityError) as info:
        lc.confirm_removal(people["olga"], entry)
    assert http_status(info.value) == 403
    lc.confirm_removal(people["alice"], entry)
    assert store.get(people["olga"], entry).status == "delisted"
    assert store.pending_changes().removed == [digest("blocked.example")]


def test_review_dates_report_then_lapse(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    keep = listed(store, people, "keep.example")
    drop = listed(store, people, "drop.example")
    clock.advance(91 * DAY)
    due = {d["id"] for d in lc.review_due(people["olga"])}
    assert due == {keep, drop}
    review = lc.reverify(people["alice"], keep, "still online, checked by hand")
    assert review == int(clock.t) + 90 * DAY
    assert lc.lapse_overdue() == []  # within the grace period
    clock.advance(15 * DAY)
    assert lc.lapse_overdue() == [drop]
    record = store.get(people["olga"], drop)
    assert record.status == "delisted" and record.delist_cause == "lapsed"
    assert store.get(people["olga"], keep).status == "active"


def test_home_hosted_entries_are_taken_down_not_blocked(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock, takedown_hours=24)
    entry = store.add_entry(people["alice"], "home.example", hosting_country="FR", evidence="e").id
    assert store.get(people["olga"], entry).status == "takedown"
    with pytest.raises(AuthorityError, match="not pending"):
        store.approve(people["bob"], entry)
    assert store.pending_changes().added == []
    with pytest.raises(AuthorityError) as info:
        lc.escalate(people["alice"], entry, "still up")
    assert info.value.code == "no_notice"
    notice = lc.record_takedown(people["alice"], entry, "abuse@host.example")
    assert notice["deadline"] == int(clock.t) + 24 * HOUR
    with pytest.raises(AuthorityError) as info:
        lc.escalate(people["alice"], entry, "still up")
    assert info.value.code == "deadline_not_reached"
    clock.advance(25 * HOUR)
    with pytest.raises(AuthorityError) as info:
        lc.escalate(people["alice"], entry, "still up")
    assert info.value.code == "not_online"
    lc.record_check(entry, ONLINE)
    lc.escalate(people["alice"], entry, "Provider did not act within 24 h")
    assert store.get(people["olga"], entry).status == "pending"
    store.approve(people["bob"], entry)  # four eyes, like any entry
    assert [e.value for e in store.pending_changes().added] == ["home.example"]


def test_takedown_gone_closes_without_listing(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    entry = store.add_entry(people["alice"], "home.example", hosting_country="FR", evidence="e").id
    assert gone_times(lc, clock, entry, 3)[-1] == "removed_at_source"
    assert store.get(people["olga"], entry).status == "delisted"
    assert store.pending_changes().removed == []  # it was never on the list
    # On weak evidence it stays a takedown (never listed) until an officer confirms.
    other = store.add_entry(people["alice"], "home2.example", hosting_country="FR", evidence="e")
    assert gone_times(lc, clock, other.id, 3, check=GONE)[-1] == "removal_pending"
    assert store.get(people["olga"], other.id).status == "takedown"
    assert store.pending_changes().added == []
    lc.confirm_removal(people["alice"], other.id)
    assert store.get(people["olga"], other.id).status == "delisted"


def test_partner_notice_and_escalating_abroad_refused(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    entry = listed(store, people, "abroad.example")
    lc.record_partner_notice(people["alice"], entry, "Hotline NL", "REF-77")
    actions = [r["action"] for r in store.audit_log(people["olga"], entry_id=entry)]
    assert "partner.notice" in actions
    with pytest.raises(AuthorityError) as info:
        lc.record_takedown(people["alice"], entry, "x@y.example")
    assert info.value.code == "not_takedown"
    with pytest.raises(AuthorityError):
        lc.record_partner_notice(people["alice"], entry, "  ")


def test_due_for_check_follows_the_cadence(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock, check_interval_hours=24)
    a = listed(store, people, "a.example")
    b = listed(store, people, "b.example")
    assert {d[0] for d in lc.due_for_check()} == {a, b}
    lc.record_check(a, ONLINE)
    assert {d[0] for d in lc.due_for_check()} == {b}
    clock.advance(25 * HOUR)
    assert {d[0] for d in lc.due_for_check()} == {a, b}


def test_report_counts_and_time_to_removal(tmp_path: Path, clock: Clock) -> None:
    store, lc, people = make(tmp_path, clock)
    entries = [
        listed(store, people, f"r{i}.example", country)
        for i, country in enumerate(["NL", "NL", "US", "DE"])
    ]
    listed_home = store.add_entry(people["alice"], "h.example", hosting_country="FR", evidence="e")
    assert listed_home.status == "takedown"
    clock.advance(10 * DAY)
    gone_times(lc, clock, entries[0], 3)  # removed ~10.5 days after approval
    report = lc.report(people["olga"])
    assert report["entries_by_status"] == {"active": 3, "delisted": 1, "takedown": 1}
    assert report["delisted_by_cause"] == {"removed_at_source": 1}
    assert report["listed_by_hosting_country"] == {"NL": 1, "US": 1, "DE": 1}
    month = next(iter(report["time_to_removal_by_month"].values()))
    assert month["removed"] == 1 and 250 < month["median_hours"] < 270
    text = json.dumps(report)
    assert ".example" not in text  # nothing that reveals a listed value


async def test_lifecycle_pass_end_to_end(tmp_path: Path) -> None:
    """The running authority checks real (loopback) sites through two resolvers.

    `gone.example` no longer exists in either resolver: strong evidence, delisted at once.
    `cloaking.example` answers 404 to any client that names itself a checker, content to
    browsers: the checker's browser user agent sees the content. `dead.example` answers 404 to
    everyone: weak evidence, so it waits for an officer even under the "auto" policy.
    """
    import asyncio

    import dnslib
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from authority_fixtures import start_authority
    from test_liveness import SPECIAL_NAMES, DnsResponder

    user_agents: list[str] = []

    async def site(request: web.Request) -> web.Response:
        host = request.host.split(":")[0]
        agent = request.headers.get("User-Agent", "")
        user_agents.append(agent)
        cloaked = host == "cloaking.example" and (
            "cordon" in agent.lower() or "bot" in agent.lower()
        )
        return web.Response(status=404 if cloaked or host == "dead.example" else 200, text="x")

    app = web.Application()
    app.router.add_get("/{tail:.*}", site)
    http = TestServer(app, host="127.0.0.1")
    await http.start_server()
    loop = asyncio.get_running_loop()
    SPECIAL_NAMES["gone.example"] = dnslib.RCODE.NXDOMAIN
    transports = [
        (await loop.create_datagram_endpoint(DnsResponder, local_addr=("127.0.0.1", 0)))[0]
        for _ in range(2)
    ]
    ports = [t.get_extra_info("sockname")[1] for t in transports]
    api = await start_authority(
        tmp_path,
        lifecycle={
            "gone_threshold": 2,
            "gone_min_interval_hours": 0,
            "scheduler_minutes": 0,
            "check_interval_hours": 0,
        },
        liveness={
            "resolver_port": ports[0],
            "extra_resolvers": [f"127.0.0.1:{ports[1]}"],
            "http_port": http.port,
            "https_port": 9,
            "timeout": 2,
            "allow_private_addresses": True,
        },
    )
    try:
        ids = {}
        for value in ("gone.example", "cloaking.example", "dead.example"):
            _, body = await api.call(
                "alice",
                "POST",
                "/v1/entries",
                {"value": value, "hosting_country": "NL", "evidence": "e"},
            )
            await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
            ids[value] = body["id"]
        await api.call("alice", "POST", "/v1/publish")
        status, first = await api.call("alice", "POST", "/v1/lifecycle/run")
        assert status == 200 and first["outcomes"] == {"gone": 2, "online": 1}, first
        _, second = await api.call("alice", "POST", "/v1/lifecycle/run")
        assert second["transitions"] == {"removed_at_source": 1, "removal_pending": 1}
        _, entry = await api.call("olga", "GET", f"/v1/entries/{ids['gone.example']}")
        assert entry["status"] == "delisted" and entry["delist_cause"] == "removed_at_source"
        _, checks = await api.call("olga", "GET", f"/v1/entries/{ids['gone.example']}/checks")
        assert [c["detail"] for c in checks["checks"]] == ["NXDOMAIN", "NXDOMAIN"]
        _, cloaking = await api.call("olga", "GET", f"/v1/entries/{ids['cloaking.example']}")
        assert cloaking["status"] == "active" and cloaking["last_outcome"] == "online"
        _, dead = await api.call("olga", "GET", f"/v1/entries/{ids['dead.example']}")
        assert dead["status"] == "removal_pending"
        assert user_agents and all(a.startswith("Mozilla/5.0") for a in user_agents)
        _, pub = await api.call("alice", "POST", "/v1/publish")
        assert pub["removed"] == 1 and pub["entries"] == 2
    finally:
        del SPECIAL_NAMES["gone.example"]
        await api.client.close()
        for transport in transports:
            transport.close()
