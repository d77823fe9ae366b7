"""The list state: every entry, in a compact immutable form shared by all editions.

Entries are kept as three packed columns sorted by digest (32-byte digests, 8-byte big-endian
entry ids, 1-byte kinds) plus, in the plain edition, the canonical values. A million entries
take 41 MB and need no per-entry Python objects; deltas are applied by binary search and
slicing, so a small change to a big list costs milliseconds.

The state checksum is SHA-256(digests || ids || kinds) over those columns. It covers ids and
kinds as well as digests, so an ASP that acks a checksum proves it holds exactly the entries the
authority published, whichever edition it takes (a plain value is tied to its digest).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from blocklist.digests import DIGEST_SIZE, digest
from blocklist.errors import ArtefactError

ID_SIZE = 8
MAX_ENTRY_ID = 2**64 - 1


class Kind(IntEnum):
    DOMAIN = 1  # the name and every name below it
    URL = 2  # a host-suffix/path-prefix expression on a shared host
    URLHOST = 3  # a host carrying URL entries (derived at publication; see blocklist/urlhosts.py)


class Edition(IntEnum):
    HASHED = 0  # digests, entry ids and kinds only
    PLAIN = 1  # adds canonical values, for ASPs authorised to run an RPZ feed

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Edition:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown edition {text!r} (expected 'hashed' or 'plain')") from None


@dataclass(frozen=True, slots=True)
class Entry:
    digest: bytes
    entry_id: int
    kind: Kind
    value: str | None = None  # canonical expression; plain edition only

    @classmethod
    def from_value(cls, value: str, entry_id: int, kind: Kind) -> Entry:
        return cls(digest(value), entry_id, kind, value)


def bisect_digest(digests: bytes, target: bytes, lo: int = 0, hi: int | None = None) -> int:
    """Index of the first packed digest >= target (like bisect_left)."""
    if hi is None:
        hi = len(digests) // DIGEST_SIZE
    while lo < hi:
        mid = (lo + hi) // 2
        off = mid * DIGEST_SIZE
        if digests[off : off + DIGEST_SIZE] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


class ListState:
    """An immutable list state. Build one with `from_entries` or by decoding an artefact."""

    __slots__ = ("_checksum", "digests", "ids", "kinds", "values")

    def __init__(
        self,
        digests: bytes,
        ids: bytes,
        kinds: bytes,
        values: tuple[str, ...] | None = None,
    ) -> None:
        # Callers inside the package guarantee order and sizes; decoders check them first.
        self.digests = digests
        self.ids = ids
        self.kinds = kinds
        self.values = values
        self._checksum: bytes | None = None

    @classmethod
    def empty(cls, plain: bool = False) -> ListState:
        return cls(b"", b"", b"", () if plain else None)

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], plain: bool = False) -> ListState:
        """Build a state; duplicate digests are refused (one entry per canonical expression)."""
        ordered = sorted(entries, key=lambda e: e.digest)
        for a, b in itertools.pairwise(ordered):
            if a.digest == b.digest:
                raise ArtefactError(
                    "duplicate_entry", f"two entries share digest {a.digest.hex()} ({a.value!r})"
                )
        for e in ordered:
            if len(e.digest) != DIGEST_SIZE or not 0 <= e.entry_id <= MAX_ENTRY_ID:
                raise ArtefactError("bad_entry", f"entry {e.entry_id} has a bad digest or id")
            if plain and e.value is None:
                raise ArtefactError("missing_value", f"entry {e.entry_id} has no plain value")
        return cls(
            b"".join(e.digest for e in ordered),
            b"".join(e.entry_id.to_bytes(ID_SIZE, "big") for e in ordered),
            bytes(int(e.kind) for e in ordered),
            tuple(e.value for e in ordered) if plain else None,  # type: ignore[misc]
        )

    @property
    def plain(self) -> bool:
        return self.values is not None

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def checksum(self) -> bytes:
        if self._checksum is None:
            h = hashlib.sha256(self.digests)
            h.update(self.ids)
            h.update(self.kinds)
            self._checksum = h.digest()
        return self._checksum

    def hashed(self) -> ListState:
        """The same state without plain values (what the hashed edition carries)."""
        if self.values is None:
            return self
        state = ListState(self.digests, self.ids, self.kinds, None)
        state._checksum = self._checksum
        return state

    def entry(self, index: int) -> Entry:
        off = index * DIGEST_SIZE
        return Entry(
            self.digests[off : off + DIGEST_SIZE],
            int.from_bytes(self.ids[index * ID_SIZE : (index + 1) * ID_SIZE], "big"),
            Kind(self.kinds[index]),
            None if self.values is None else self.values[index],
        )

    def __iter__(self) -> Iterator[Entry]:
        return (self.entry(i) for i in range(len(self)))

    def index_of(self, target: bytes) -> int:
        """Index of an entry by digest, or -1."""
        i = bisect_digest(self.digests, target)
        off = i * DIGEST_SIZE
        return i if self.digests[off : off + DIGEST_SIZE] == target else -1

    def __contains__(self, target: bytes) -> bool:
        return self.index_of(target) >= 0

    def iter_digests(self, kind: Kind | None = None) -> Iterator[bytes]:
        d = self.digests
        if kind is None:
            return (d[o : o + DIGEST_SIZE] for o in range(0, len(d), DIGEST_SIZE))
        k = int(kind)
        return (
            d[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] for i, v in enumerate(self.kinds) if v == k
        )

    def apply(self, removed: Sequence[bytes], added: Sequence[Entry]) -> ListState:
        """A new state with `removed` digests taken out and `added` entries put in.

        Refuses a removal of a digest that is not present and an addition of one that is (and is
        not removed in the same change): either means the change was made for another base.
        Both sequences must be sorted by digest without duplicates.
        """
        n = len(self)
        plain = self.values is not None
        removals: list[int] = []
        for d in removed:
            i = self.index_of(d)
            if i < 0:
                raise ArtefactError(
                    "delta_mismatch", f"removed entry {d.hex()} is not in the state"
                )
            removals.append(i)
        removal_set = set(removals)
        insertions: list[tuple[int, Entry]] = []
        for e in added:
            i = bisect_digest(self.digests, e.digest)
            present = self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] == e.digest
            if present and i not in removal_set:
                raise ArtefactError(
                    "delta_mismatch", f"added entry {e.digest.hex()} is already in the state"
                )
            if plain and e.value is None:
                raise ArtefactError("missing_value", f"added entry {e.entry_id} has no value")
            insertions.append((i, e))

        # Walk the change points in order; at one position an insertion precedes a removal, so
        # replacing an entry (same digest, new id or kind) is a removal plus an insertion.
        events = sorted(
            [(i, 0, e) for i, e in insertions] + [(i, 1, None) for i in removals],
            key=lambda ev: (ev[0], ev[1]),
        )
        dig_parts: list[bytes] = []
        id_parts: list[bytes] = []
        kind_parts: list[bytes] = []
        val_parts: list[str] = []
        prev = 0
        for pos, op, e in events:
            if pos > prev:
                dig_parts.append(self.digests[prev * DIGEST_SIZE : pos * DIGEST_SIZE])
                id_parts.append(self.ids[prev * ID_SIZE : pos * ID_SIZE])
                kind_parts.append(self.kinds[prev:pos])
                if plain:
                    val_parts.extend(self.values[prev:pos])  # type: ignore[index]
                prev = pos
            if op == 0:
                assert e is not None
                dig_parts.append(e.digest)
                id_parts.append(e.entry_id.to_bytes(ID_SIZE, "big"))
                kind_parts.append(bytes((int(e.kind),)))
                if plain:
                    val_parts.append(e.value)  # type: ignore[arg-type]
            else:
                prev = pos + 1
        dig_parts.append(self.digests[prev * DIGEST_SIZE :])
        id_parts.append(self.ids[prev * ID_SIZE :])
        kind_parts.append(self.kinds[prev:])
        if plain:
            val_parts.extend(self.values[prev:n])  # type: ignore[index]
        return ListState(
            b"".join(dig_parts),
            b"".join(id_parts),
            b"".join(kind_parts),
            tuple(val_parts) if plain else None,
        )

    def diff(self, newer: ListState) -> tuple[list[bytes], list[Entry]]:
        """Removed digests and added entries that turn this state into `newer` (both sorted).

        An entry whose id or kind changed appears in both lists.
        """
        old_map = {e.digest: e for e in self}
        removed: list[bytes] = []
        added: list[Entry] = []
        seen: set[bytes] = set()
        for e in newer:
            seen.add(e.digest)
            before = old_map.get(e.digest)
            if before is None:
                added.append(e)
            elif before.entry_id != e.entry_id or before.kind != e.kind:
                removed.append(e.digest)
                added.append(e)
        removed.extend(d for d in old_map if d not in seen)
        removed.sort()
        return removed, added
