"""Snapshot and delta files: byte formats, encoders and bounded decoders.

Both files are zlib streams (RFC 1950) of a fixed header followed by packed columns; the layout
is documented byte by byte in docs/protocol.md. Neither file is signed itself: the signed
notification carries each file's size and SHA-256, and `check_file` must pass before a decoder
sees the bytes. Decoders still treat their input as hostile: every count is bounded before it
is used, decompression stops at a computed limit, and any inconsistency raises ArtefactError.
"""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
import zlib
from dataclasses import dataclass

from blocklist.digests import DIGEST_SIZE
from blocklist.errors import ArtefactError
from blocklist.state import ID_SIZE, Edition, Entry, Kind, ListState

FORMAT_VERSION = 1
SNAPSHOT_MAGIC = b"CSNP"
DELTA_MAGIC = b"CDLT"
MAX_VALUE_BYTES = 4096  # longest canonical value carried in the plain edition
MAX_LIST_ID = 64
DEFAULT_MAX_ENTRIES = 20_000_000
# Decompressed size bound per edition, whatever the entry count claims. Hashed: 41 bytes an entry,
# so 20M entries fit in 1 GiB exactly. Plain: values are mostly short names (tens of bytes); the
# per-value maximum (4 KiB) times 20M entries would allow ~82 GB, so the whole file is capped.
MAX_INFLATED_BYTES = {"hashed": 1 << 30, "plain": 2 << 30}
COMPRESSION_LEVEL = 1  # digests do not compress; level 1 is as small as 6 here and twice as fast

# magic, version, edition, session (16), serial, count, list-id length
_SNAPSHOT_HEAD = struct.Struct(">4sBB16sQIB")
# magic, version, edition, session, from serial, to serial, base checksum, result checksum,
# removed count, added count, list-id length
_DELTA_HEAD = struct.Struct(">4sBB16sQQ32s32sIIB")
_KINDS = frozenset(int(k) for k in Kind)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    list_id: str
    edition: Edition
    session: uuid.UUID
    serial: int


@dataclass(frozen=True, slots=True)
class Delta:
    list_id: str
    edition: Edition
    session: uuid.UUID
    from_serial: int
    to_serial: int
    base_checksum: bytes
    result_checksum: bytes
    removed: tuple[bytes, ...]
    added: tuple[Entry, ...]


def check_file(data: bytes, size: int, sha256_hex: str, what: str) -> None:
    """Check a downloaded file against the size and SHA-256 given in a signed notification."""
    if len(data) != size:
        reason = "oversized" if len(data) > size else "truncated"
        raise ArtefactError(reason, f"{what} is {len(data)} bytes; the notification says {size}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256_hex:
        raise ArtefactError(
            "hash_mismatch", f"{what} has SHA-256 {actual}; the notification says {sha256_hex}"
        )


# ---------------------------------------------------------------- encoding


def _list_id_bytes(list_id: str) -> bytes:
    raw = list_id.encode("ascii")
    if not 1 <= len(raw) <= MAX_LIST_ID:
        raise ArtefactError("bad_list_id", f"list id must be 1 to {MAX_LIST_ID} ASCII characters")
    return raw


def _values_column(values: tuple[str, ...] | list[str]) -> bytes:
    parts = []
    for v in values:
        raw = v.encode("utf-8")
        if len(raw) > MAX_VALUE_BYTES:
            raise ArtefactError(
                "value_too_long", f"value of {len(raw)} bytes exceeds {MAX_VALUE_BYTES}"
            )
        parts.append(len(raw).to_bytes(2, "big"))
        parts.append(raw)
    return b"".join(parts)


def encode_snapshot(
    state: ListState,
    list_id: str,
    edition: Edition,
    session: uuid.UUID,
    serial: int,
    level: int = COMPRESSION_LEVEL,
) -> bytes:
    lid = _list_id_bytes(list_id)
    head = _SNAPSHOT_HEAD.pack(
        SNAPSHOT_MAGIC, FORMAT_VERSION, edition, session.bytes, serial, len(state), len(lid)
    )
    parts = [head, lid, state.digests, state.ids, state.kinds]
    if edition is Edition.PLAIN:
        if state.values is None:
            raise ArtefactError("missing_value", "the plain edition needs a state with values")
        parts.append(_values_column(state.values))
    comp = zlib.compressobj(level)
    return b"".join(comp.compress(p) for p in parts) + comp.flush()


def _entry_columns(entries: tuple[Entry, ...] | list[Entry], plain: bool) -> list[bytes]:
    cols = [
        b"".join(e.digest for e in entries),
        b"".join(e.entry_id.to_bytes(ID_SIZE, "big") for e in entries),
        bytes(int(e.kind) for e in entries),
    ]
    if plain:
        if any(e.value is None for e in entries):
            raise ArtefactError("missing_value", "the plain edition needs values for added entries")
        cols.append(_values_column([e.value for e in entries]))  # type: ignore[misc]
    return cols


def encode_delta(delta: Delta, level: int = COMPRESSION_LEVEL) -> bytes:
    lid = _list_id_bytes(delta.list_id)
    head = _DELTA_HEAD.pack(
        DELTA_MAGIC,
        FORMAT_VERSION,
        delta.edition,
        delta.session.bytes,
        delta.from_serial,
        delta.to_serial,
        delta.base_checksum,
        delta.result_checksum,
        len(delta.removed),
        len(delta.added),
        len(lid),
    )
    parts = [head, lid, b"".join(delta.removed)]
    parts += _entry_columns(delta.added, delta.edition is Edition.PLAIN)
    return zlib.compress(b"".join(parts), level)


def make_delta(
    base: ListState,
    result: ListState,
    list_id: str,
    edition: Edition,
    session: uuid.UUID,
    from_serial: int,
    to_serial: int,
    removed: list[bytes] | None = None,
    added: list[Entry] | None = None,
) -> Delta:
    """The delta from `base` to `result`; pass `removed`/`added` when the caller knows them."""
    if removed is None or added is None:
        removed, added = base.diff(result)
    if edition is Edition.HASHED:
        added = [Entry(e.digest, e.entry_id, e.kind) for e in added]
    return Delta(
        list_id,
        edition,
        session,
        from_serial,
        to_serial,
        base.checksum,
        result.checksum,
        tuple(removed),
        tuple(added),
    )


# ---------------------------------------------------------------- decoding


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ArtefactError("malformed", f"{what} is not a valid zlib stream: {exc}") from exc
    if len(raw) > limit:
        raise ArtefactError("oversized", f"{what} expands beyond {limit} bytes")
    if not d.eof:
        raise ArtefactError("truncated", f"{what} ends before its compressed stream does")
    if d.unused_data:
        raise ArtefactError("malformed", f"{what} has bytes after its compressed stream")
    return raw


class _Reader:
    """Bounded cursor over a decompressed artefact."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ArtefactError("truncated", f"{self.what} ends early (needs byte {end})")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise ArtefactError(
                "malformed", f"{self.what} has {len(self.buf) - self.pos} extra bytes"
            )


def _check_head(magic: bytes, expected: bytes, version: int, edition: int, what: str) -> Edition:
    if magic != expected:
        raise ArtefactError("bad_magic", f"{what} does not start with {expected!r}")
    if version != FORMAT_VERSION:
        raise ArtefactError("bad_version", f"{what} has format version {version}; expected 1")
    try:
        return Edition(edition)
    except ValueError:
        raise ArtefactError("bad_edition", f"{what} has unknown edition {edition}") from None


def _read_list_id(r: _Reader, length: int) -> str:
    raw = r.take(length)
    try:
        lid = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ArtefactError("malformed", f"{r.what} has a non-ASCII list id") from None
    if not 1 <= length <= MAX_LIST_ID:
        raise ArtefactError("malformed", f"{r.what} has a list id of {length} bytes")
    return lid


def _check_sorted(digests: bytes, what: str) -> None:
    prev = b""
    for off in range(0, len(digests), DIGEST_SIZE):
        cur = digests[off : off + DIGEST_SIZE]
        if cur <= prev:
            raise ArtefactError("not_sorted", f"{what}: digests are not strictly ascending")
        prev = cur


def _check_kinds(kinds: bytes, what: str) -> None:
    if not set(kinds) <= _KINDS:
        raise ArtefactError("bad_kind", f"{what} has an unknown entry kind")


# The shape of a canonical value (blocklist/domains.py, blocklist/urls.py): a signed list whose
# values are anything else is refused, so no value can carry a newline, a space or a `$INCLUDE`
# into an RPZ zone file or a configuration built from the plain edition. A shape check, not the
# full canonicalisation: it must stay cheap for a million values.
_CANONICAL_DOMAIN = re.compile(rb"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\Z")
# A URL expression: a host, "/", then a path in the Safe Browsing canonical form (every byte
# <= 0x20, >= 0x7f, "#" and "%" escaped as %XX): printable ASCII, no space.
_CANONICAL_URL = re.compile(rb"[a-z0-9._%:\[\]-]{1,253}/[!-~]*\Z")


_KIND_NAMES = {Kind.DOMAIN: "domain", Kind.URL: "URL expression", Kind.URLHOST: "URL host"}


def canonical_shape(kind: int, raw: bytes) -> bool:
    if kind == Kind.DOMAIN or kind == Kind.URLHOST:
        return len(raw) <= 253 and _CANONICAL_DOMAIN.match(raw) is not None
    if kind == Kind.URL:
        return _CANONICAL_URL.match(raw) is not None
    return True  # an unknown kind is refused by the kinds check, with its own reason


def _read_values(r: _Reader, digests: bytes, kinds: bytes, count: int) -> tuple[str, ...]:
    values = []
    for i in range(count):
        length = int.from_bytes(r.take(2), "big")
        if length == 0:
            # The authority holds this entry only as a digest (a hashed-only feed).
            values.append("")
            continue
        raw = r.take(length)
        if hashlib.sha256(raw).digest() != digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]:
            raise ArtefactError("value_mismatch", f"{r.what}: value {i} does not match its digest")
        if not canonical_shape(kinds[i], raw):
            raise ArtefactError(
                "not_canonical",
                f"{r.what}: value {i} is not a canonical {_KIND_NAMES.get(kinds[i], 'value')}",
            )
        values.append(raw.decode("ascii"))
    return tuple(values)


def _raw_limit(count: int, edition: Edition, extra: int = 0) -> int:
    per_entry = DIGEST_SIZE + ID_SIZE + 1
    if edition is Edition.PLAIN:
        per_entry += 2 + MAX_VALUE_BYTES
    exact = _DELTA_HEAD.size + MAX_LIST_ID + count * per_entry + extra
    return min(exact, MAX_INFLATED_BYTES[edition.label])


def decode_snapshot(
    data: bytes, max_entries: int = DEFAULT_MAX_ENTRIES, check_order: bool = True
) -> tuple[SnapshotInfo, ListState]:
    """Decode a snapshot. `check_order=False` is for a caller that compares the result's
    checksum with a signed one anyway: the checksum covers the order, so the check is implied."""
    what = "snapshot"
    # The first block names the count; inflate just the header to bound the rest.
    head = _peek_head(data, _SNAPSHOT_HEAD.size, what)
    magic, version, edition_b, session, serial, count, lid_len = _SNAPSHOT_HEAD.unpack(head)
    edition = _check_head(magic, SNAPSHOT_MAGIC, version, edition_b, what)
    if count > max_entries:
        raise ArtefactError("oversized", f"{what} claims {count} entries (limit {max_entries})")
    r = _Reader(_inflate(data, _raw_limit(count, edition), what), what)
    r.take(_SNAPSHOT_HEAD.size)
    list_id = _read_list_id(r, lid_len)
    digests = r.take(count * DIGEST_SIZE)
    ids = r.take(count * ID_SIZE)
    kinds = r.take(count)
    values = _read_values(r, digests, kinds, count) if edition is Edition.PLAIN else None
    r.finish()
    if check_order:
        _check_sorted(digests, what)
    _check_kinds(kinds, what)
    info = SnapshotInfo(list_id, edition, uuid.UUID(bytes=session), serial)
    return info, ListState(digests, ids, kinds, values)


def decode_delta(data: bytes, max_entries: int = DEFAULT_MAX_ENTRIES) -> Delta:
    what = "delta"
    head = _peek_head(data, _DELTA_HEAD.size, what)
    fields = _DELTA_HEAD.unpack(head)
    magic, version, edition_b, session, from_serial, to_serial, base, result = fields[:8]
    n_removed, n_added, lid_len = fields[8:]
    edition = _check_head(magic, DELTA_MAGIC, version, edition_b, what)
    if n_removed > max_entries or n_added > max_entries:
        raise ArtefactError("oversized", f"{what} claims too many entries")
    if to_serial <= from_serial:
        raise ArtefactError("malformed", f"{what} goes from serial {from_serial} to {to_serial}")
    limit = _raw_limit(n_added, edition, n_removed * DIGEST_SIZE)
    r = _Reader(_inflate(data, limit, what), what)
    r.take(_DELTA_HEAD.size)
    list_id = _read_list_id(r, lid_len)
    removed_col = r.take(n_removed * DIGEST_SIZE)
    digests = r.take(n_added * DIGEST_SIZE)
    ids = r.take(n_added * ID_SIZE)
    kinds = r.take(n_added)
    values = _read_values(r, digests, kinds, n_added) if edition is Edition.PLAIN else None
    r.finish()
    _check_sorted(removed_col, what)
    _check_sorted(digests, what)
    _check_kinds(kinds, what)
    removed = tuple(
        removed_col[o : o + DIGEST_SIZE] for o in range(0, len(removed_col), DIGEST_SIZE)
    )
    added = tuple(
        Entry(
            digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE],
            int.from_bytes(ids[i * ID_SIZE : (i + 1) * ID_SIZE], "big"),
            Kind(kinds[i]),
            None if values is None else values[i],
        )
        for i in range(n_added)
    )
    session_id = uuid.UUID(bytes=session)
    return Delta(list_id, edition, session_id, from_serial, to_serial, base, result, removed, added)


def _peek_head(data: bytes, size: int, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        head = d.decompress(data, size)
    except zlib.error as exc:
        raise ArtefactError("malformed", f"{what} is not a valid zlib stream: {exc}") from exc
    if len(head) < size:
        raise ArtefactError("truncated", f"{what} is shorter than its header")
    return head


def apply_delta(state: ListState, delta: Delta) -> ListState:
    """Apply a verified delta, checking the base and the result checksums."""
    if state.checksum != delta.base_checksum:
        raise ArtefactError(
            "wrong_base",
            f"delta {delta.from_serial}->{delta.to_serial} was made for state "
            f"{delta.base_checksum.hex()[:16]}…, not the current {state.checksum.hex()[:16]}…",
        )
    new = state.apply(delta.removed, delta.added)
    if new.checksum != delta.result_checksum:
        raise ArtefactError(
            "checksum_mismatch",
            f"applying delta {delta.from_serial}->{delta.to_serial} gave state "
            f"{new.checksum.hex()[:16]}…, expected {delta.result_checksum.hex()[:16]}…",
        )
    return new
