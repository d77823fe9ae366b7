"""The response cache: raw upstream replies keyed by `dnswire.cache_key`, bounded in entries and
bytes, least recently used evicted first.

An entry keeps the reply's bytes with TTLs already clamped to the cache's lifetime for it, and
`ResponseInfo` so a hit is one `rewrite_response` (id, question case, TTLs aged). It also keeps
the names of the reply's CNAME chain and the generation of the list they were checked against:
after a list swap, the first hit re-checks the question and the chain against the new list, so
a swap never needs to clear the cache and a hit on an unchanged list never hashes a name.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from resolver.dnswire import ResponseInfo

_U32 = struct.Struct("!I")
# Rough cost of one entry besides its bytes: the entry, its key, the ResponseInfo tuple and the
# OrderedDict node. Only used to bound memory, so it need not be exact.
ENTRY_OVERHEAD = 480


class CacheEntry:
    __slots__ = (
        "blocked",
        "data",
        "expires",
        "gen",
        "info",
        "names",
        "size",
        "stored",
        "via_cname",
    )

    def __init__(
        self,
        data: bytes,
        info: ResponseInfo,
        stored: float,
        expires: float,
        names: tuple[bytes, ...],
        gen: int,
        blocked: int,
        via_cname: bool,
    ) -> None:
        self.data = data
        self.info = info
        self.stored = stored
        self.expires = expires
        self.names = names  # answer owners and CNAME targets other than the question name
        self.gen = gen  # list generation `blocked` was computed for
        self.blocked = blocked  # entry id blocking the question or its chain, or -1
        self.via_cname = via_cname
        self.size = len(data) + ENTRY_OVERHEAD + 8 * len(info.ttl_offsets)


def clamp_ttls(data: bytes, info: ResponseInfo, lifetime: int, min_ttl: int) -> bytes:
    """The reply with every record TTL within [min(min_ttl, lifetime), lifetime].

    Clients then never hold a record longer than we do, and ageing by `rewrite_response` reaches
    zero when the entry expires.
    """
    if not info.ttl_offsets:
        return data
    buf = bytearray(data)
    unpack, pack = _U32.unpack_from, _U32.pack_into
    floor = min(min_ttl, lifetime)
    for off in info.ttl_offsets:
        ttl = unpack(buf, off)[0]
        if ttl >= 0x80000000:
            ttl = 0
        if ttl > lifetime:
            ttl = lifetime
        elif ttl < floor:
            ttl = floor
        pack(buf, off, ttl)
    return bytes(buf)


class ResponseCache:
    """LRU over an OrderedDict: a hit moves the entry to the end, eviction pops the front."""

    __slots__ = ("_data", "bytes", "evictions", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._data: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes, now: float) -> CacheEntry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._data[key]
            self.bytes -= entry.size
            return None
        self._data.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: CacheEntry) -> None:
        if entry.size > self.max_bytes or not self.max_entries:
            return
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        data[key] = entry
        self.bytes += entry.size
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = data.popitem(last=False)
            self.bytes -= evicted.size
            self.evictions += 1

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0
