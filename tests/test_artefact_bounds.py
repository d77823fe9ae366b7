"""Decompression is bounded per edition by bytes, not only by the entry count a file claims."""

from __future__ import annotations

import uuid
import zlib

import pytest

from blocklist import artefacts
from blocklist.artefacts import decode_delta, decode_snapshot, encode_snapshot, make_delta
from blocklist.errors import ArtefactError
from blocklist.state import Edition, Entry, Kind, ListState

SESSION = uuid.uuid4()


def plain_state(n: int, length: int) -> ListState:
    names = [f"{i:06d}.{'x' * length}.example" for i in range(n)]
    return ListState.from_entries(
        [Entry.from_value(v, i + 1, Kind.DOMAIN) for i, v in enumerate(names)], plain=True
    )


def test_plain_edition_is_capped_by_bytes(monkeypatch) -> None:
    state = plain_state(200, 40)
    data = encode_snapshot(state, "national", Edition.PLAIN, SESSION, 1, 9)
    size = len(zlib.decompress(data))
    assert decode_snapshot(data)[1].checksum == state.checksum
    # The entry count allows 200 values of 4 KiB; the per-edition byte cap is what stops it.
    monkeypatch.setitem(artefacts.MAX_INFLATED_BYTES, "plain", size - 1)
    with pytest.raises(ArtefactError) as info:
        decode_snapshot(data)
    assert info.value.reason == "oversized" and str(size - 1) in str(info.value)
    # The hashed edition has its own, independent bound.
    hashed = encode_snapshot(state.hashed(), "national", Edition.HASHED, SESSION, 1, 9)
    assert decode_snapshot(hashed)[1].checksum == state.hashed().checksum


def test_delta_is_capped_by_bytes(monkeypatch) -> None:
    old, new = plain_state(10, 8), plain_state(60, 60)
    removed, added = old.diff(new)
    delta = make_delta(old, new, "national", Edition.PLAIN, SESSION, 1, 2, removed, added)
    data = artefacts.encode_delta(delta)
    size = len(zlib.decompress(data))
    assert decode_delta(data).to_serial == 2
    monkeypatch.setitem(artefacts.MAX_INFLATED_BYTES, "plain", size - 1)
    with pytest.raises(ArtefactError, match="expands beyond"):
        decode_delta(data)


def test_default_caps_are_realistic() -> None:
    # 20M hashed entries fit exactly; the plain cap is far below 20M values of 4 KiB (~82 GB).
    assert artefacts.MAX_INFLATED_BYTES["hashed"] > 20_000_000 * 41
    assert artefacts.MAX_INFLATED_BYTES["plain"] <= 2 << 30
