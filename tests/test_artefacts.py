import contextlib
import dataclasses
import hashlib
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist.artefacts import (
    apply_delta,
    check_file,
    decode_delta,
    decode_snapshot,
    encode_delta,
    encode_snapshot,
    make_delta,
)
from blocklist.digests import digest
from blocklist.errors import ArtefactError
from blocklist.state import Edition, Entry, Kind, ListState

SESSION = uuid.UUID("0b7c6f5e-4a3d-4c2b-9a1f-0e1d2c3b4a59")


def entries(names: list[str], start: int = 1) -> list[Entry]:
    return [
        Entry.from_value(n, start + i, Kind.URL if "/" in n else Kind.DOMAIN)
        for i, n in enumerate(names)
    ]


def state_of(names: list[str], plain: bool = True) -> ListState:
    return ListState.from_entries(entries(names), plain=plain)


NAMES = [f"blocked{i}.example" for i in range(50)] + ["shared.example/album/7/"]


def test_checksum_covers_sorted_columns() -> None:
    s = state_of(NAMES)
    ordered = sorted(entries(NAMES), key=lambda e: e.digest)
    h = hashlib.sha256()
    h.update(b"".join(e.digest for e in ordered))
    h.update(b"".join(e.entry_id.to_bytes(8, "big") for e in ordered))
    h.update(bytes(e.kind for e in ordered))
    assert s.checksum == h.digest()
    assert s.hashed().checksum == s.checksum
    # Same digests with another id give another checksum.
    other = ListState.from_entries(entries(NAMES, start=100))
    assert other.checksum != s.checksum


def test_duplicate_entries_refused() -> None:
    with pytest.raises(ArtefactError) as info:
        ListState.from_entries(entries(["a.example", "a.example"]))
    assert info.value.reason == "duplicate_entry"


@pytest.mark.parametrize("edition", list(Edition))
def test_snapshot_round_trip(edition: Edition) -> None:
    s = state_of(NAMES)
    data = encode_snapshot(s, "national", edition, SESSION, 7)
    info, back = decode_snapshot(data)
    assert (info.list_id, info.edition, info.session, info.serial) == (
        "national",
        edition,
        SESSION,
        7,
    )
    assert back.checksum == s.checksum
    assert list(back) == (list(s) if edition is Edition.PLAIN else list(s.hashed()))


def test_empty_snapshot_round_trip() -> None:
    data = encode_snapshot(ListState.empty(), "national", Edition.HASHED, SESSION, 1)
    info, back = decode_snapshot(data)
    assert len(back) == 0 and info.serial == 1


def test_state_lookup_and_iteration() -> None:
    s = state_of(NAMES)
    d = digest("blocked3.example")
    assert d in s
    e = s.entry(s.index_of(d))
    assert (e.entry_id, e.kind, e.value) == (4, Kind.DOMAIN, "blocked3.example")
    assert digest("absent.example") not in s
    assert len(list(s.iter_digests(Kind.URL))) == 1
    assert len(list(s.iter_digests())) == len(NAMES)


@pytest.mark.parametrize("edition", list(Edition))
def test_delta_round_trip_and_apply(edition: Edition) -> None:
    base = state_of(NAMES)
    new_entries = entries([*NAMES[5:], "new1.example", "new2.example/x/"])
    result = ListState.from_entries(new_entries, plain=True)
    delta = make_delta(base, result, "national", edition, SESSION, 3, 4)
    data = encode_delta(delta)
    back = decode_delta(data)
    assert back == delta
    base_e = base if edition is Edition.PLAIN else base.hashed()
    applied = apply_delta(base_e, back)
    assert applied.checksum == result.checksum
    if edition is Edition.PLAIN:
        assert applied.values == result.values


def test_apply_replaces_entry_with_new_id() -> None:
    base = state_of(["a.example", "b.example"])
    changed = [Entry.from_value("a.example", 99, Kind.DOMAIN), *entries(["b.example"], start=2)]
    result = ListState.from_entries(changed, plain=True)
    removed, added = base.diff(result)
    assert removed == [digest("a.example")]
    assert [e.entry_id for e in added] == [99]
    assert base.apply(removed, added).checksum == result.checksum


def test_delta_with_wrong_base_refused() -> None:
    base = state_of(NAMES)
    result = state_of(NAMES[1:])
    delta = make_delta(base, result, "national", Edition.HASHED, SESSION, 3, 4)
    other = state_of(NAMES[2:])
    with pytest.raises(ArtefactError) as info:
        apply_delta(other, delta)
    assert info.value.reason == "wrong_base"


def test_delta_whose_result_differs_refused() -> None:
    base = state_of(NAMES)
    result = state_of(NAMES[1:])
    delta = make_delta(base, result, "national", Edition.HASHED, SESSION, 3, 4)
    forged = dataclasses.replace(delta, result_checksum=b"\0" * 32)
    with pytest.raises(ArtefactError) as info:
        apply_delta(base.hashed(), forged)
    assert info.value.reason == "checksum_mismatch"


def test_apply_refuses_inconsistent_changes() -> None:
    base = state_of(["a.example"])
    with pytest.raises(ArtefactError, match="not in the state"):
        base.apply([digest("zzz.example")], [])
    with pytest.raises(ArtefactError, match="already in the state"):
        base.apply([], entries(["a.example"]))


def test_check_file() -> None:
    data = b"artefact bytes"
    check_file(data, len(data), hashlib.sha256(data).hexdigest(), "snapshot")
    with pytest.raises(ArtefactError) as info:
        check_file(data + b"x", len(data), hashlib.sha256(data).hexdigest(), "snapshot")
    assert info.value.reason == "oversized"
    with pytest.raises(ArtefactError) as info:
        check_file(data[:-1], len(data), hashlib.sha256(data).hexdigest(), "snapshot")
    assert info.value.reason == "truncated"
    with pytest.raises(ArtefactError) as info:
        check_file(b"artefact bytez", len(data), hashlib.sha256(data).hexdigest(), "snapshot")
    assert info.value.reason == "hash_mismatch"


def _raw(data: bytes) -> bytes:
    return zlib.decompress(data)


def _recompress(raw: bytes) -> bytes:
    return zlib.compress(raw)


def test_truncated_snapshot_at_every_length_refused() -> None:
    data = encode_snapshot(state_of(NAMES[:5]), "national", Edition.PLAIN, SESSION, 7)
    for cut in range(len(data)):
        with pytest.raises(ArtefactError):
            decode_snapshot(data[:cut])
    raw = _raw(data)
    for cut in range(0, len(raw), 7):
        with pytest.raises(ArtefactError):
            decode_snapshot(_recompress(raw[:cut]))


def test_malformed_snapshots_refused() -> None:
    s = state_of(NAMES[:5])
    raw = bytearray(_raw(encode_snapshot(s, "national", Edition.PLAIN, SESSION, 7)))
    cases = {
        "bad_magic": lambda r: r.__setitem__(0, ord("X")),
        "bad_version": lambda r: r.__setitem__(4, 9),
        "bad_edition": lambda r: r.__setitem__(5, 7),
    }
    for reason, mutate in cases.items():
        r = bytearray(raw)
        mutate(r)
        with pytest.raises(ArtefactError) as info:
            decode_snapshot(_recompress(bytes(r)))
        assert info.value.reason == reason
    # extra bytes after the last value
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(_recompress(bytes(raw) + b"\0"))
    assert info.value.reason == "malformed"
    # bytes after the zlib stream
    with pytest.raises(ArtefactError):
        decode_snapshot(_recompress(bytes(raw)) + b"\0")
    # not zlib at all
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(b"not a snapshot at all")
    assert info.value.reason == "malformed"


def test_unsorted_or_tampered_values_refused() -> None:
    s = state_of(NAMES[:3])
    raw = bytearray(_raw(encode_snapshot(s, "national", Edition.PLAIN, SESSION, 7)))
    head = 35 + len("national")
    swapped = bytearray(raw)
    swapped[head : head + 32], swapped[head + 32 : head + 64] = (
        raw[head + 32 : head + 64],
        raw[head : head + 32],
    )
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(_recompress(bytes(swapped)))
    assert info.value.reason in {"not_sorted", "value_mismatch"}
    # A value that does not hash to its digest.
    tampered = bytes(raw).replace(b"blocked1.example", b"blocked1.exampl3")
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(_recompress(tampered))
    assert info.value.reason == "value_mismatch"
    # An unknown kind byte.
    n = len(s)
    kinds_at = head + n * 40
    bad_kind = bytearray(raw)
    bad_kind[kinds_at] = 9
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(_recompress(bytes(bad_kind)))
    assert info.value.reason == "bad_kind"


def test_count_bounds_refuse_before_inflating() -> None:
    s = state_of(NAMES)
    data = encode_snapshot(s, "national", Edition.HASHED, SESSION, 7)
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(data, max_entries=10)
    assert info.value.reason == "oversized"
    # A header claiming few entries followed by a zip bomb stops at the computed limit.
    raw = bytearray(_raw(data))
    raw[30:34] = (1).to_bytes(4, "big")
    bomb = _recompress(bytes(raw) + b"\0" * 10_000_000)
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(bomb)
    assert info.value.reason == "oversized"


def test_delta_malformations_refused() -> None:
    base = state_of(NAMES)
    delta = make_delta(
        base, state_of([*NAMES[2:], "n.example"]), "l", Edition.HASHED, SESSION, 3, 4
    )
    data = encode_delta(delta)
    for cut in range(0, len(data)):
        with pytest.raises(ArtefactError):
            decode_delta(data[:cut])
    raw = bytearray(_raw(data))
    raw[22:30] = (9).to_bytes(8, "big")  # from serial after to serial
    with pytest.raises(ArtefactError, match="goes from serial 9 to 4"):
        decode_delta(_recompress(bytes(raw)))
    with pytest.raises(ArtefactError) as info:
        decode_delta(encode_snapshot(base, "l", Edition.HASHED, SESSION, 3))
    assert info.value.reason in {"bad_magic", "truncated"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_artefact_error(blob: bytes) -> None:
    for candidate in (blob, zlib.compress(blob), zlib.compress(b"CSNP\x01\x00" + blob)):
        for decode in (decode_snapshot, decode_delta):
            with contextlib.suppress(ArtefactError):
                decode(candidate)


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(0, 300), max_size=40),
    st.sets(st.integers(0, 300), max_size=40),
)
def test_apply_equals_rebuild(before: set[int], after: set[int]) -> None:
    old = ListState.from_entries(entries([f"n{i}.example" for i in sorted(before)]), plain=True)
    new = ListState.from_entries(
        [Entry.from_value(f"n{i}.example", i + 1000, Kind.DOMAIN) for i in sorted(after)],
        plain=True,
    )
    removed, added = old.diff(new)
    got = old.apply(removed, added)
    assert got.checksum == new.checksum
    assert got.values == new.values


@pytest.mark.parametrize(
    "value, kind",
    [
        ("evil.test\n$INCLUDE /etc/passwd\nwww.protected.example", Kind.DOMAIN),
        ("evil.test. 60 IN A 192.0.2.1", Kind.DOMAIN),
        ("Upper.example", Kind.DOMAIN),
        ("a..example", Kind.DOMAIN),
        ("l" * 64 + ".example", Kind.DOMAIN),
        ("b\u00fccher.example", Kind.DOMAIN),
        ("shared.example/a b", Kind.URL),
        ("shared.example\n/x", Kind.URL),
        ("shared.example", Kind.URL),
    ],
)
def test_signed_values_that_are_not_canonical_are_refused(value: str, kind: Kind) -> None:
    """A value that hashes to its digest but is not in canonical form (a stolen signing key, a
    buggy authority) is refused in snapshots and deltas alike: it never reaches an RPZ zone
    file, where a newline would add records of its own (a protected name blocked, $INCLUDE)."""
    bad = Entry.from_value(value, 99, kind)
    state = ListState.from_entries([*entries(NAMES[:3]), bad], plain=True)
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(encode_snapshot(state, "national", Edition.PLAIN, SESSION, 7))
    assert info.value.reason == "not_canonical" and "value" in str(info.value)
    base = state_of(NAMES[:3])
    delta = make_delta(base, state, "national", Edition.PLAIN, SESSION, 7, 8)
    with pytest.raises(ArtefactError) as info:
        decode_delta(encode_delta(delta))
    assert info.value.reason == "not_canonical"
    # The same entries with a canonical value decode (the check is not refusing everything).
    good = Entry.from_value("fine.example" if kind is Kind.DOMAIN else "fine.example/x", 99, kind)
    ok = ListState.from_entries([*entries(NAMES[:3]), good], plain=True)
    decoded = decode_snapshot(encode_snapshot(ok, "national", Edition.PLAIN, SESSION, 7))[1]
    assert decoded.checksum == ok.checksum and decoded.values == ok.values
