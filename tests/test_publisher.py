"""The publisher: real files in tmp_path, real keys, real SIGKILLs at every write point."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from blocklist import crash as crash_mod
from blocklist.artefacts import apply_delta, check_file, decode_delta, decode_snapshot
from blocklist.authority.publisher import (
    CRASH_POINTS,
    NOTIFICATION_FILE,
    Publisher,
    PublisherError,
)
from blocklist.errors import ArtefactError
from blocklist.notification import Notification, check_notification, open_notification
from blocklist.state import Edition, Entry, Kind, ListState
from signing import (
    decode_bundle,
    generate_key,
    issue_certificate,
    key_id,
    peek_key_id,
    public_key_raw,
    save_private_key,
)

LIST = "national"
NOW = int(time.time())
ROOT = generate_key()
ROOT_PUB = public_key_raw(ROOT)
SIGNER = generate_key()
CERT = issue_certificate(ROOT, public_key_raw(SIGNER), "signing", NOW - 3600, NOW + 30 * 86400)
EDITIONS = ("hashed", "plain")
REPO = Path(__file__).resolve().parent.parent


def entries(prefix: str, n: int, start_id: int) -> list[Entry]:
    out = [
        Entry.from_value(f"{prefix}{i}.blocked.example", start_id + i, Kind.DOMAIN)
        for i in range(n)
    ]
    out.append(Entry.from_value(f"shared.example/{prefix}/album/", start_id + n, Kind.URL))
    return sorted(out, key=lambda e: e.digest)


def make(directory: Path, **kw) -> Publisher:
    kw.setdefault("pinned_root", ROOT_PUB)
    return Publisher(directory, LIST, "Test Authority", SIGNER, [CERT], **kw)


def fetch(
    pubdir: Path, edition: str, have: tuple[int, ListState] | None = None
) -> tuple[Notification, ListState]:
    """What an ASP does: verify the notification, check every named file, replay snapshot +
    deltas to the signed checksum; with `have`, also the incremental path from that serial."""
    base = pubdir / edition
    note = open_notification((base / NOTIFICATION_FILE).read_bytes(), [ROOT_PUB], int(time.time()))
    check_notification(
        note, now=int(time.time()), list_id=LIST, edition=edition, current_serial=None
    )
    blobs = {}
    for ref in [note.snapshot, *note.deltas]:
        data = (base / ref.uri).read_bytes()
        check_file(data, ref.size, ref.sha256, ref.uri)
        blobs[ref.uri] = data
    deltas = {d.uri: decode_delta(blobs[d.uri]) for d in note.deltas}
    info, state = decode_snapshot(blobs[note.snapshot.uri])
    assert (info.serial, str(info.session), info.edition) == (
        note.snapshot.serial,
        note.session,
        Edition.parse(edition),
    )
    for ref in note.deltas_from(note.snapshot.serial) or []:
        state = apply_delta(state, deltas[ref.uri])
    assert state.checksum.hex() == note.state_checksum
    assert len(state) == note.entry_count
    if have is not None and (chain := note.deltas_from(have[0])) is not None:
        inc = have[1] if edition == "plain" else have[1].hashed()
        for ref in chain:
            inc = apply_delta(inc, deltas[ref.uri])
        assert inc.checksum == state.checksum
    return note, state


def artefact_files(pubdir: Path, edition: str) -> set[str]:
    return {p.name for p in (pubdir / edition).iterdir() if p.name != NOTIFICATION_FILE}


def refs(note: Notification) -> set[str]:
    return {note.snapshot.uri, *(d.uri for d in note.deltas)}


BASE = entries("base", 40, 1)
CHANGES = [  # (removed, added) applied in turn from serial 2 on
    ([BASE[0].digest, BASE[5].digest], entries("two", 3, 1000)),
    ([BASE[1].digest], entries("three", 4, 2000)),
    ([BASE[2].digest, BASE[3].digest], entries("four", 2, 3000)),
]
STATES = [ListState.empty(plain=True), ListState.from_entries(BASE, plain=True)]
for _removed, _added in CHANGES:
    STATES.append(STATES[-1].apply(_removed, _added))


def publish_base(pubdir: Path, serials: int = 2, **kw) -> Publisher:
    p = make(pubdir, **kw)
    p.publish([], BASE)
    for removed, added in CHANGES[: serials - 1]:
        p.publish(removed, added)
    return p


# ---------------------------------------------------------------- basics


def test_first_publish_files_verify_and_replay(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = make(pubdir)
    assert p.load() is None and len(p.state) == 0
    pub = p.publish([], BASE)
    assert (pub.serial, pub.entry_count, pub.checksum) == (1, len(BASE), STATES[1].checksum)
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition)
        assert note.serial == 1 and note.deltas == [] and note.snapshot.serial == 1
        assert note.session == str(pub.session) and note.created == pub.created
        assert note.expires == note.created + 86400
        assert note.snapshot.uri == f"snapshot-{pub.session}-1.bin"
        assert state.plain == (edition == "plain")
    pub2 = p.publish(*CHANGES[0])
    assert pub2.serial == 2 and pub2.checksum == STATES[2].checksum
    for edition in EDITIONS:
        note, _ = fetch(pubdir, edition, have=(1, STATES[1]))
        assert [(d.from_serial, d.to_serial) for d in note.deltas] == [(1, 2)]
        assert note.deltas[0].uri == f"delta-{pub.session}-1-2.bin"
    # The hashed edition never carries a plain value; the plain one does.
    values = [e.value.encode() for e in BASE + CHANGES[0][1]]
    for edition in EDITIONS:
        raw = b"".join(
            zlib.decompress((pubdir / edition / n).read_bytes())
            for n in artefact_files(pubdir, edition)
        )
        found = [v for v in values if v in raw]
        assert (found == []) if edition == "hashed" else (len(found) == len(values))


def test_load_recovers_state_and_continues(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    publish_base(pubdir, 3)
    again = make(pubdir)
    assert again.state.checksum == STATES[3].checksum
    assert list(again.state) == list(STATES[3])
    pub = again.publish(*CHANGES[2])
    assert pub.serial == 4 and pub.checksum == STATES[4].checksum
    for edition in EDITIONS:
        fetch(pubdir, edition, have=(3, STATES[3]))


def test_bad_changes_are_refused_and_nothing_moves(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = publish_base(pubdir, 1)
    before = (pubdir / "plain" / NOTIFICATION_FILE).read_bytes()
    forged = Entry(BASE[0].digest[::-1], 99, Kind.DOMAIN, "not-matching.example")
    with pytest.raises(PublisherError) as info:
        p.publish([], [forged])
    assert info.value.reason == "bad_change"
    with pytest.raises(ArtefactError):
        p.publish([b"\x00" * 32], [])  # not in the list
    with pytest.raises(ArtefactError):
        p.publish([], [BASE[0]])  # already listed
    assert (pubdir / "plain" / NOTIFICATION_FILE).read_bytes() == before
    assert p.publish(*CHANGES[0]).serial == 2


def test_corrupt_directory_is_refused_at_load(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    publish_base(pubdir, 1)
    note, _ = fetch(pubdir, "plain")
    path = pubdir / "plain" / note.snapshot.uri
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(PublisherError) as info:
        make(pubdir)
    assert info.value.reason == "corrupt_file"
    with pytest.raises(PublisherError) as info:
        make(pubdir, pinned_root=public_key_raw(generate_key()))
    assert info.value.reason == "bad_notification"


# ---------------------------------------------------------------- deltas, GC, sessions, keys


def test_delta_retention_rule(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = make(pubdir)
    state = ListState.empty(plain=True)
    current = entries("r", 150, 1)
    p.publish([], current)
    history: dict[int, int] = {}  # to_serial -> delta size
    prev_listed: set[int] = set()
    next_id = 10_000
    for serial in range(2, 16):
        gone, current = current[:12], current[12:]
        new = entries(f"r{serial}-", 11, next_id)
        next_id += 100
        current = sorted(current + new, key=lambda e: e.digest)
        p.publish(sorted(e.digest for e in gone), new)
        note, state = fetch(pubdir, "plain")
        hnote, _ = fetch(pubdir, "hashed")
        history[serial] = next(d.size for d in note.deltas if d.to_serial == serial)
        sizes = [d.size for d in note.deltas]
        assert note.snapshot.serial == serial  # small list: snapshot written synchronously
        assert [d.to_serial for d in note.deltas] == list(
            range(serial - len(sizes) + 1, serial + 1)
        )
        assert sum(sizes) < note.snapshot.size
        first = serial - len(sizes)  # from_serial of the oldest listed delta
        if first in history and first in prev_listed:
            # the next older delta was still available: it must not have fitted
            assert sum(sizes) + history[first] >= note.snapshot.size
        prev_listed = {d.to_serial for d in note.deltas}
        assert sum(d.size for d in hnote.deltas) < hnote.snapshot.size
    assert 1 < len(note.deltas) < 14  # some kept, the oldest dropped
    assert state.checksum == ListState.from_entries(current, plain=True).checksum

    # A delta bigger than the snapshot is not listed at all: clients take the snapshot.
    p.publish(sorted(e.digest for e in current[5:]), [])
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition)
        assert note.deltas == [] and note.entry_count == 5


def test_gc_keeps_previous_serial_files(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = make(pubdir)
    p.publish([], BASE)
    notes = {e: [fetch(pubdir, e)[0]] for e in EDITIONS}
    for i in range(2, 8):
        p.publish([], entries(f"gc{i}-", 30, i * 1000))
        for edition in EDITIONS:
            prev = notes[edition][-1]
            note, _ = fetch(pubdir, edition)
            notes[edition].append(note)
            on_disk = artefact_files(pubdir, edition)
            # exactly the files of the current and the previous notification
            assert on_disk == refs(note) | refs(prev)
            for ref in [prev.snapshot, *prev.deltas]:  # a client that read prev still succeeds
                check_file((pubdir / edition / ref.uri).read_bytes(), ref.size, ref.sha256, "f")
    assert f"snapshot-{notes['plain'][0].session}-1.bin" not in artefact_files(pubdir, "plain")


def test_new_session(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = publish_base(pubdir, 2)
    old = {e: fetch(pubdir, e)[0] for e in EDITIONS}
    pub = p.new_session()
    assert pub.serial == 3 and pub.checksum == STATES[2].checksum
    assert str(pub.session) != old["plain"].session
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition, have=(2, STATES[2]))
        assert note.session == str(pub.session) and note.deltas == [] and note.snapshot.serial == 3
        assert state.checksum == STATES[2].checksum
        assert refs(old[edition]) <= artefact_files(pubdir, edition)  # grace period
    p.publish(*CHANGES[1])
    p.publish(*CHANGES[2])
    for edition in EDITIONS:
        note, _ = fetch(pubdir, edition)
        assert note.serial == 5 and note.session == str(pub.session)
        assert [(d.from_serial, d.to_serial) for d in note.deltas] == [(3, 4), (4, 5)]
        assert not refs(old[edition]) & artefact_files(pubdir, edition)
    assert make(pubdir).state.checksum == STATES[4].checksum


class Clock:
    def __init__(self) -> None:
        self.t = float(NOW)

    def __call__(self) -> float:
        return self.t


def test_resign_changes_times_not_serial(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    clock = Clock()
    p = publish_base(pubdir, 2, clock=clock, expiry=3600)
    before = {e: fetch(pubdir, e)[0] for e in EDITIONS}
    clock.t += 1800
    pub = p.resign()
    assert pub.serial == 2 and pub.created == NOW + 1800
    for edition in EDITIONS:
        note, _ = fetch(pubdir, edition)
        assert (note.created, note.expires) == (NOW + 1800, NOW + 5400)
        same = note.model_copy(
            update={"created": before[edition].created, "expires": before[edition].expires}
        )
        assert same == before[edition]


def test_rekey(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = publish_base(pubdir, 1)
    new_key = generate_key()
    new_cert = issue_certificate(ROOT, public_key_raw(new_key), "signing", NOW - 60, NOW + 86400)
    stranger = generate_key()
    bad_cert = issue_certificate(
        stranger, public_key_raw(new_key), "signing", NOW - 60, NOW + 86400
    )
    with pytest.raises(PublisherError) as info:
        p.rekey(new_key, [bad_cert])  # chain not from the pinned root: refused up front
    assert info.value.reason == "bad_signing_setup"
    p.rekey(new_key, [new_cert])
    p.resign()
    p.publish(*CHANGES[0])
    for edition in EDITIONS:
        fetch(pubdir, edition)
        certs, signed = decode_bundle((pubdir / edition / NOTIFICATION_FILE).read_bytes(), 1 << 18)
        assert certs == [new_cert] and peek_key_id(signed) == key_id(public_key_raw(new_key))


# ---------------------------------------------------------------- the lagging-snapshot fast path


def test_fast_path_lagging_snapshot_then_compact(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    p = make(pubdir, sync_snapshot_limit=10)
    p.publish([], BASE)  # first serial of a session: snapshot always written
    for serial, change in enumerate(CHANGES, start=2):
        p.publish(*change)
        assert p.needs_compact
        for edition in EDITIONS:
            note, state = fetch(pubdir, edition, have=(serial - 1, STATES[serial - 1]))
            assert note.snapshot.serial == 1 and note.serial == serial
            assert [d.to_serial for d in note.deltas] == list(range(2, serial + 1))
            assert state.checksum == STATES[serial].checksum
            assert f"snapshot-{note.session}-{serial}.bin" not in artefact_files(pubdir, edition)
    # GC never took the old snapshot or a bridge delta, though they are older than serial 3.
    assert make(pubdir, sync_snapshot_limit=10).state.checksum == STATES[4].checksum
    pub = p.compact()
    assert pub is not None and pub.serial == 4 and not p.needs_compact
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition, have=(3, STATES[3]))
        assert note.snapshot.serial == 4 and state.checksum == STATES[4].checksum
        assert [d.to_serial for d in note.deltas] == [2, 3, 4]  # small deltas stay listed
    assert p.compact() == pub  # nothing to do


def test_fast_path_values_follow_every_kind_of_change(tmp_path: Path) -> None:
    """Plain values are materialised lazily from the logged changes: removals of entries added
    in the log, re-additions of removed digests, replacements (same digest, new id)."""
    pubdir = tmp_path / "pub"
    p = make(pubdir, sync_snapshot_limit=10)
    p.publish([], BASE)
    x = entries("x", 2, 500)
    readd = Entry(BASE[0].digest, 777, BASE[0].kind, BASE[0].value)
    replace = Entry(BASE[1].digest, 778, Kind.DOMAIN, BASE[1].value)
    steps = [
        ([BASE[0].digest], x),
        ([x[0].digest], [readd]),
        ([BASE[1].digest, x[1].digest], [replace]),
    ]
    expected = STATES[1]
    for removed, added in steps:
        expected = expected.apply(sorted(removed), sorted(added, key=lambda e: e.digest))
        p.publish(removed, added)
    assert p.needs_compact
    assert p.hashed_state.checksum == expected.checksum and not p.hashed_state.plain
    assert list(p.state) == list(expected)  # materialised on demand, values included
    for edition in EDITIONS:
        assert fetch(pubdir, edition)[1].checksum == expected.checksum
    p.publish([], entries("z", 1, 900))  # the log goes on after an on-demand materialisation
    expected = expected.apply([], entries("z", 1, 900))
    p.compact()
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition)
        assert note.snapshot.serial == 5 and state.checksum == expected.checksum
    assert list(fetch(pubdir, "plain")[1]) == list(expected)
    assert list(make(pubdir).state) == list(expected)


def test_compact_concurrent_with_publish(tmp_path: Path) -> None:
    pubdir = tmp_path / "pub"
    big = entries("big", 3000, 1)
    p = make(pubdir, sync_snapshot_limit=10)
    p.publish([], big)
    p.publish([], entries("x", 2, 90_000))
    worker = threading.Thread(target=p.compact)
    worker.start()
    for i in range(3):
        p.publish([], entries(f"y{i}-", 2, 91_000 + 10 * i))
    worker.join()
    expected = p.state.checksum
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition)
        assert note.serial == 5 and state.checksum == expected
    p.compact()
    assert not p.needs_compact
    assert make(pubdir).state.checksum == expected


# ---------------------------------------------------------------- crash safety (real SIGKILL)

COMMITTED_HASHED = {"hashed/notification", "plain/notification.tmp", "plain/notification", "gc"}
COMMITTED_PLAIN = {"plain/notification", "gc"}
_NO_DELTA = {"hashed/delta.tmp", "hashed/delta", "plain/delta.tmp", "plain/delta"}
_NO_SNAPSHOT = {"hashed/snapshot.tmp", "hashed/snapshot", "plain/snapshot.tmp", "plain/snapshot"}
OPS = {  # operation -> the points it passes
    "publish": CRASH_POINTS,
    "publish-fast": tuple(c for c in CRASH_POINTS if c not in _NO_SNAPSHOT),
    "new_session": tuple(c for c in CRASH_POINTS if c not in _NO_DELTA),
    "compact": tuple(c for c in CRASH_POINTS if c not in _NO_DELTA and c != "gc"),
}
CASES = [(op, point) for op, points in OPS.items() for point in points]


def run_op(p: Publisher, op: str) -> None:
    if op.startswith("publish"):
        p.publish(*CHANGES[1])
    elif op == "new_session":
        p.new_session()
    else:
        p.compact()


def crash_in_child(pubdir: Path, op: str, point: str, limit: int) -> int:
    """Fork; the child (a real process) runs `op` and SIGKILLs itself at `point`."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            crash_mod.arm(point)
            run_op(make(pubdir, sync_snapshot_limit=limit), op)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)


def check_after_crash(pubdir: Path, op: str, point: str, limit: int) -> None:
    # 1. What ASPs see right now: each edition is wholly at the old or wholly at the new serial.
    committed = {"hashed": point in COMMITTED_HASHED, "plain": point in COMMITTED_PLAIN}
    new_serial = 2 if op == "compact" else 3
    new_state = {"publish": STATES[3], "publish-fast": STATES[3]}.get(op, STATES[2])
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition, have=(1, STATES[1]))
        if committed[edition]:
            assert note.serial == new_serial and state.checksum == new_state.checksum
            if op == "compact":
                assert note.snapshot.serial == 2
        else:
            assert note.serial == 2 and state.checksum == STATES[2].checksum
            if op == "compact":
                assert note.snapshot.serial == 1
    # 2. A fresh publisher recovers the committed serial, completes a half-committed one, and
    #    the next publish brings both editions to the next serial.
    plain_before = fetch(pubdir, "plain")[0].serial
    p = make(pubdir, sync_snapshot_limit=limit)
    expect = new_serial if committed["hashed"] else 2
    assert p.current().serial == expect
    assert p.state.checksum == (new_state if committed["hashed"] else STATES[2]).checksum
    assert not any(n.startswith(".") for e in EDITIONS for n in os.listdir(pubdir / e))
    for edition in EDITIONS:
        assert fetch(pubdir, edition)[0].serial == expect
    held = STATES[2] if plain_before == 2 else new_state
    if op.startswith("publish") and committed["hashed"]:
        removed, added = CHANGES[2]
    else:
        removed, added = CHANGES[1]
    pub = p.publish(removed, added)
    assert pub.serial == expect + 1
    for edition in EDITIONS:
        note, state = fetch(pubdir, edition, have=(plain_before, held))
        assert note.serial == expect + 1 and state.checksum == pub.checksum
        if op.startswith("publish") or op == "compact":  # same session: clients at 2 use deltas
            assert note.deltas_from(2) is not None
    p.compact()
    assert make(pubdir, sync_snapshot_limit=limit).state.checksum == pub.checksum


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for limit in (10, 50_000):
        out[limit] = tmp_path_factory.mktemp(f"base{limit}") / "pub"
        publish_base(out[limit], 2, sync_snapshot_limit=limit)
    return out


@pytest.mark.parametrize(("op", "point"), CASES, ids=[f"{o}@{c}" for o, c in CASES])
def test_sigkill_at_every_point(tmp_path: Path, base_dirs: dict, op: str, point: str) -> None:
    pubdir = tmp_path / "pub"
    limit = 10 if op in ("publish-fast", "compact") else 50_000
    shutil.copytree(base_dirs[limit], pubdir)  # serials 1 and 2, made once per snapshot limit
    assert crash_in_child(pubdir, op, point, limit) == signal.SIGKILL
    check_after_crash(pubdir, op, point, limit)


def test_sigkill_armed_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The env hook as an operator would trip it: a separate `python` process."""
    pubdir = tmp_path / "pub"
    publish_base(pubdir, 2)
    key_path = tmp_path / "signing.key"
    save_private_key(key_path, SIGNER)
    (tmp_path / "cert").write_bytes(CERT)
    script = (
        "import sys; from pathlib import Path\n"
        "from blocklist.authority.publisher import Publisher\n"
        "from signing import load_private_key\n"
        "from tests.test_publisher import CHANGES\n"
        "from blocklist import crash\n"
        "crash.arm('hashed/notification')\n"
        "d = Path(sys.argv[1])\n"
        "key = load_private_key(d / 'signing.key')\n"
        "p = Publisher(d / 'pub', 'national', 'Authority', key, [(d / 'cert').read_bytes()])\n"
        "p.publish(*CHANGES[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    check_after_crash(pubdir, "publish", "hashed/notification", 50_000)
