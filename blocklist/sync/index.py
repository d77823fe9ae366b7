"""The plugin index: the list in force as a file any resolver plugin can map and search.

`resolver sync` is the only component that verifies the list (design §10); it writes this file
next to `state.bin` after loading or applying each verified list, so plugins inside Unbound,
PowerDNS Recursor or dnsdist enforce exactly what was verified without parsing the protocol,
checking signatures or holding any plaintext name. Layout (all integers big-endian), version 1:

    offset 0        magic "CDXI" | u16 version 1 | u16 digest size 32
    offset 8        u64 serial | u64 count N | u64 verified_at (unix seconds)
    offset 32       32-byte state checksum (the list's, as `resolver sync --status` shows it)
    offset 64       fan-out: 65,536 u32, entry i = number of digests whose first two bytes <= i
    offset 262,208  N digests of 32 bytes, ascending, unique: the DOMAIN entries only
    end - 32        SHA-256 of every byte before it (the integrity check)

A reader accepts the file only if the size is exactly 262,240 + 32 N, the magic and version
match, the trailing SHA-256 is right and the last fan-out entry equals N; otherwise it keeps the
list it had. A digest with first two bytes p lies at an index in [fanout[p-1], fanout[p]), so a
lookup is a binary search over a handful of entries of the mapped file. The file is replaced
atomically (temp file, fsync, rename), so a reader that opens it sees one complete version.
docs/protocol.md ("What a plugin reads") is the contract for third-party plugins.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import sys
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from blocklist.digests import DIGEST_SIZE
from blocklist.errors import ArtefactError
from blocklist.files import write_atomic
from blocklist.state import Kind, ListState
from blocklist.sync.verified import VerifiedList

INDEX_FILE = "index.bin"
MAGIC = b"CDXI"
VERSION = 1
HEADER = struct.Struct(">4sHHQQQ32s")
FANOUT_SIZE = 65536
FANOUT_OFFSET = HEADER.size
DIGESTS_OFFSET = FANOUT_OFFSET + 4 * FANOUT_SIZE
TRAILER_SIZE = 32
_KIND_DOMAIN = int(Kind.DOMAIN)


def domain_digests(state: ListState) -> bytes:
    """The packed digests of the DOMAIN entries, in the state's (ascending) order."""
    if state.kinds.count(_KIND_DOMAIN) == len(state):
        return state.digests
    d = state.digests
    return b"".join(
        d[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
        for i, kind in enumerate(state.kinds)
        if kind == _KIND_DOMAIN
    )


def fanout(digests: bytes) -> bytes:
    """The fan-out table of sorted packed digests, as 65,536 big-endian u32."""
    counts = [0] * FANOUT_SIZE
    if digests:
        firsts = memoryview(digests).cast("H")[:: DIGEST_SIZE // 2]
        prefixes = array("H", firsts.tobytes())
        if sys.byteorder == "little":
            prefixes.byteswap()
        for p in prefixes:
            counts[p] += 1
    table = array("I", accumulate(counts))
    assert table.itemsize == 4
    if sys.byteorder == "little":
        table.byteswap()
    return table.tobytes()


def encode_index(state: ListState, serial: int, verified_at: int) -> list[bytes]:
    """The index file's bytes, as chunks to write in order."""
    digests = domain_digests(state)
    count = len(digests) // DIGEST_SIZE
    head = HEADER.pack(MAGIC, VERSION, DIGEST_SIZE, serial, count, verified_at, state.checksum)
    table = fanout(digests)
    h = hashlib.sha256(head)
    h.update(table)
    h.update(digests)
    return [head, table, digests, h.digest()]


def write_index(state_dir: Path, verified: VerifiedList) -> Path:
    """Replace `state_dir/index.bin` with the index of `verified` (durably, atomically)."""
    path = state_dir / INDEX_FILE
    chunks = encode_index(verified.state, verified.serial, verified.verified_at)
    write_atomic(path, chunks, "index")
    return path


def index_subscriber(state_dir: Path) -> Callable[[VerifiedList], Awaitable[None]]:
    """A follower subscriber that rewrites the index after each verified list is persisted."""

    async def write(verified: VerifiedList) -> None:
        await asyncio.to_thread(write_index, state_dir, verified)

    return write


@dataclass(frozen=True)
class IndexInfo:
    serial: int
    count: int
    verified_at: int
    state_checksum: bytes


def check_index(data: bytes, name: str = INDEX_FILE) -> IndexInfo:
    """Validate an index file's bytes as a plugin must; ArtefactError names what is wrong."""
    if len(data) < DIGESTS_OFFSET + TRAILER_SIZE:
        raise ArtefactError("truncated", f"{name}: {len(data)} bytes is too short for an index")
    magic, version, size, serial, count, verified_at, checksum = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ArtefactError("bad_magic", f"{name} is not a Cordon index file")
    if version != VERSION or size != DIGEST_SIZE:
        raise ArtefactError("version", f"{name}: unsupported index version {version}/{size}")
    if len(data) != DIGESTS_OFFSET + DIGEST_SIZE * count + TRAILER_SIZE:
        raise ArtefactError("size", f"{name}: size does not match its {count} entries")
    if hashlib.sha256(memoryview(data)[:-TRAILER_SIZE]).digest() != data[-TRAILER_SIZE:]:
        raise ArtefactError("checksum_mismatch", f"{name}: integrity check failed")
    if struct.unpack_from(">I", data, DIGESTS_OFFSET - 4)[0] != count:
        raise ArtefactError("fanout", f"{name}: fan-out table does not add up to {count}")
    return IndexInfo(serial, count, verified_at, checksum)
