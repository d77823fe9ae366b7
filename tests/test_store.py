import sqlite3
import threading
from pathlib import Path

import pytest

from blocklist.authority.errors import http_status
from blocklist.authority.store import SYSTEM, AuthorityError, ImportLine, Principal, Store
from blocklist.digests import digest
from blocklist.domains import ProtectedNames
from blocklist.state import Kind


class Clock:
    def __init__(self, t: float = 1_790_000_000) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(
        tmp_path / "authority.db",
        protected=ProtectedNames(["www.protected.example"]),
        clock=Clock(),
    )
    yield s
    s.close()


def officers(store: Store) -> dict[str, Principal]:
    out = {}
    for name, role in [
        ("alice", "officer"),
        ("bob", "approver"),
        ("carol", "approver"),
        ("olga", "oversight"),
    ]:
        info, _ = store.add_officer(SYSTEM, name, role)
        out[name] = Principal("officer", info["id"], name, role)
    return out


def add(store: Store, who: Principal, raw: str = "blocked.example") -> int:
    return store.add_entry(who, raw, hosting_country="NL", evidence="case-1").id


def test_tokens_authenticate_and_are_stored_hashed(store: Store) -> None:
    _, token = store.add_officer(SYSTEM, "alice", "officer")
    who = store.authenticate(token)
    assert who is not None and who.name == "alice" and who.role == "officer"
    assert store.authenticate(token + "x") is None
    with sqlite3.connect(store.path) as raw_db:
        stored = raw_db.execute("SELECT token_hash FROM tokens").fetchone()[0]
    assert token.encode() not in bytes(stored) and len(stored) == 32
    raw = Path(store.path).read_bytes()
    assert token.encode() not in raw


def test_four_eyes_approval(store: Store) -> None:
    o = officers(store)
    entry_id = add(store, o["bob"])
    with pytest.raises(AuthorityError) as info:
        store.approve(o["bob"], entry_id)
    assert (http_status(info.value), info.value.code) == (403, "four_eyes")
    with pytest.raises(AuthorityError) as info:
        store.approve(o["alice"], entry_id)  # an officer may not approve at all
    assert http_status(info.value) == 403
    record = store.approve(o["carol"], entry_id)
    assert record.status == "active" and record.approved_by == "carol"
    assert record.review_date == record.approved + 90 * 86400
    with pytest.raises(AuthorityError) as info:
        store.approve(o["carol"], entry_id)  # approving twice
    assert (http_status(info.value), info.value.code) == (409, "not_pending")


def test_oversight_reads_but_changes_nothing(store: Store) -> None:
    o = officers(store)
    entry_id = add(store, o["alice"])
    assert store.get(o["olga"], entry_id).value == "blocked.example"
    for call in (
        lambda: add(store, o["olga"], "other.example"),
        lambda: store.approve(o["olga"], entry_id),
        lambda: store.delist(o["olga"], entry_id, "no"),
        lambda: store.add_officer(o["olga"], "eve", "admin"),
    ):
        with pytest.raises(AuthorityError) as info:
            call()
        assert http_status(info.value) == 403


def test_unknown_entry(store: Store) -> None:
    o = officers(store)
    with pytest.raises(AuthorityError) as info:
        store.approve(o["bob"], 999)
    assert http_status(info.value) == 404


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("co.uk", "public_suffix"),
        ("www.protected.example", "protected_name"),
        ("192.0.2.1", "ip_literal"),
        ("", "empty"),
        ("bad name.example", "invalid_characters"),
    ],
)
def test_invalid_entries_refused_with_reason(store: Store, raw: str, reason: str) -> None:
    o = officers(store)
    with pytest.raises(AuthorityError) as info:
        add(store, o["alice"], raw)
    assert http_status(info.value) == 422 and info.value.extra["reason"] == reason


def test_field_validation(store: Store) -> None:
    o = officers(store)
    with pytest.raises(AuthorityError, match="ISO 3166"):
        store.add_entry(o["alice"], "a.example", hosting_country="XX", evidence="e")
    with pytest.raises(AuthorityError, match="evidence reference is required"):
        store.add_entry(o["alice"], "a.example", hosting_country="NL", evidence=" ")


def test_duplicates_refused_while_live(store: Store) -> None:
    o = officers(store)
    first = add(store, o["alice"])
    with pytest.raises(AuthorityError) as info:
        add(store, o["alice"], "*.BLOCKED.example.")
    assert info.value.code == "duplicate" and info.value.extra["entry_id"] == first
    store.approve(o["bob"], first)
    store.delist(o["alice"], first, "removed at source")
    store.confirm_delist(o["carol"], first)
    assert add(store, o["alice"]) != first  # listable again once delisted


def test_delist_needs_reason(store: Store) -> None:
    o = officers(store)
    entry_id = add(store, o["alice"])
    store.approve(o["bob"], entry_id)
    with pytest.raises(AuthorityError, match="reason is required"):
        store.delist(o["alice"], entry_id, "")
    assert store.delist(o["alice"], entry_id, "gone").delist_pending
    assert store.confirm_delist(o["carol"], entry_id).status == "delisted"
    with pytest.raises(AuthorityError) as info:
        store.delist(o["alice"], entry_id, "again")
    assert info.value.code == "not_listed"


def test_batch_import_and_decision(store: Store) -> None:
    o = officers(store)
    lines = [
        ImportLine(1, "one.example", hosting_country="NL", evidence="b-1"),
        ImportLine(2, "co.uk", hosting_country="NL", evidence="b-1"),
        ImportLine(3, "two.example", hosting_country="ZZ", evidence="b-1"),
        ImportLine(4, "http://shared.example/a/", hosting_country="US", evidence="b-1"),
        ImportLine(5, "ONE.example", hosting_country="NL", evidence="b-1"),
    ]
    report = store.import_batch(o["alice"], lines, source="test.csv")
    assert report.accepted == 2
    assert [(r["line"], r["reason"]) for r in report.refused] == [
        (2, "public_suffix"),
        (3, "invalid_country"),
        (5, "duplicate"),
    ]
    entry = store.list_entries(o["alice"], status="pending")[0]
    with pytest.raises(AuthorityError) as info:
        store.approve(o["bob"], entry.id)
    assert info.value.code == "in_batch"
    with pytest.raises(AuthorityError) as info:
        store.decide_batch(o["alice"], report.batch_id, accept=True)
    assert http_status(info.value) == 403
    # The batch is 200% of an empty list: it needs explicit confirmation.
    with pytest.raises(AuthorityError) as info:
        store.decide_batch(o["bob"], report.batch_id, accept=True)
    assert info.value.code == "confirmation_required"
    batch = store.decide_batch(o["bob"], report.batch_id, accept=True, confirm_large=True)
    assert batch["status"] == "accepted"
    changes = store.pending_changes()
    assert len(changes.added) == 2 and changes.bulk
    assert {e.kind for e in changes.added} == {Kind.DOMAIN, Kind.URL}


def test_batch_reject_needs_reason(store: Store) -> None:
    o = officers(store)
    report = store.import_batch(
        o["alice"], [ImportLine(1, "x.example", hosting_country="NL", evidence="e")]
    )
    with pytest.raises(AuthorityError, match="reason"):
        store.decide_batch(o["bob"], report.batch_id, accept=False)
    assert store.decide_batch(o["bob"], report.batch_id, accept=False, reason="dup")["status"] == (
        "rejected"
    )
    assert store.list_entries(o["bob"], status="rejected")[0].value == "x.example"


def test_pending_changes_and_publication_marks(store: Store) -> None:
    o = officers(store)
    a = add(store, o["alice"], "a.example")
    b = add(store, o["alice"], "b.example")
    store.approve(o["bob"], a)
    store.approve(o["bob"], b)
    changes = store.pending_changes()
    assert sorted(e.value for e in changes.added) == ["a.example", "b.example"]
    store.mark_published(SYSTEM, changes, serial=1, session="s", checksum=b"\1" * 32, entry_count=2)
    assert not store.pending_changes().added
    store.delist(o["alice"], a, "gone")
    store.confirm_delist(o["carol"], a)
    changes = store.pending_changes()
    assert changes.removed == [digest("a.example")] and not changes.added
    assert store.publications()[0]["serial"] == 1


def test_concurrent_approvals_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "authority.db"
    first = Store(path, clock=Clock())
    o = officers(first)
    entry_id = add(first, o["alice"])
    stores = [Store(path, clock=Clock()) for _ in range(2)]
    results: list[object] = []
    barrier = threading.Barrier(2)

    def approve(s: Store, who: Principal) -> None:
        barrier.wait()
        try:
            results.append(s.approve(who, entry_id).status)
        except AuthorityError as exc:
            results.append(exc.code)

    threads = [
        threading.Thread(target=approve, args=(stores[0], o["bob"])),
        threading.Thread(target=approve, args=(stores[1], o["carol"])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["active", "not_pending"]
    assert first.verify_audit().ok


def test_audit_chain_detects_tampering(store: Store) -> None:
    o = officers(store)
    entry_id = add(store, o["alice"])
    store.approve(o["bob"], entry_id)
    report = store.verify_audit()
    assert report.ok and report.records == 6
    raw_db = sqlite3.connect(store.path, isolation_level=None)
    # The triggers refuse edits through SQL...
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw_db.execute("UPDATE audit SET actor = 'officer:mallory' WHERE seq = 5")
    # ...and the chain catches someone who drops them first.
    raw_db.execute("DROP TRIGGER audit_no_update")
    raw_db.execute("UPDATE audit SET actor = 'officer:mallory' WHERE seq = 5")
    report = store.verify_audit()
    assert not report.ok and "record 5 was altered" in report.problem
    raw_db.execute("DROP TRIGGER audit_no_delete")
    raw_db.execute("DELETE FROM audit WHERE seq = 3")
    assert "record 3 is missing" in store.verify_audit().problem
    raw_db.close()


def test_compliance_report(store: Store) -> None:
    o = officers(store)
    _, token = store.add_asp(SYSTEM, "isp-one")
    asp = store.authenticate(token)
    store.add_asp(SYSTEM, "isp-silent")
    entry_id = add(store, o["alice"])
    store.approve(o["bob"], entry_id)
    changes = store.pending_changes()
    store.mark_published(SYSTEM, changes, serial=1, session="s", checksum=b"\1" * 32, entry_count=1)
    store.record_ack(asp, "dns-1", 1, b"\1" * 32, {"held": 0})
    store.record_ack(asp, "dns-2", 1, b"\2" * 32, {})
    store.clock.t += 2 * 86400
    report = store.compliance(o["olga"])
    rows = {(r["asp"], r["instance"]): r for r in report["instances"]}
    assert rows[("isp-one", "dns-1")]["lag"] == 0 and not rows[("isp-one", "dns-1")]["divergent"]
    assert rows[("isp-one", "dns-2")]["divergent"]
    assert rows[("isp-silent", None)]["overdue"]
    assert not rows[("isp-one", "dns-1")]["overdue"]
    with pytest.raises(AuthorityError):
        store.record_ack(o["alice"], "x", 1, b"\1" * 32, {})


def test_gc_pause_nests_and_drain_empties() -> None:
    import gc

    from blocklist.authority.bulk import drain, gc_paused

    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer import still runs
    assert gc.isenabled()
    items = list(range(12_345))
    drain(items)
    assert items == []
