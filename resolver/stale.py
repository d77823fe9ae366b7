"""Serve-stale (RFC 8767): an expired answer beats SERVFAIL when every upstream fails.

Every answer the cache takes is also remembered here, past its expiry, for at most
`cache.stale_max_age` seconds. When a query that missed the cache cannot be answered by any
upstream (timeouts, network errors, or an upstream SERVFAIL), the remembered answer is sent
instead, with every TTL set to `cache.stale_answer_ttl` (RFC 8767 §4: 30 s) and Extended DNS
Error 3 (Stale Answer) when the client speaks EDNS. Bounded: at most `cache.max_entries`
answers and `cache.max_bytes` bytes, oldest stored first out. A stale answer is checked against
the list in force like any cached one, so a name listed since is still blocked.

Only the forwarding path (misses) reaches this module, on either UDP path: the C fast path
hands every miss to Python, so both give the same bytes.
"""

from __future__ import annotations

import struct

from resolver.cache import CacheEntry
from resolver.dnswire import EDE_OPTION, NOERROR, NXDOMAIN, TYPE_OPT, Query, rewrite_response

EDE_STALE_ANSWER = 3
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_OPT_HEAD = struct.Struct("!BHHIH")  # root owner, type, payload, ext-rcode/version/flags, RDLEN
_EDE = _U16.pack(EDE_OPTION) + _U16.pack(2) + _U16.pack(EDE_STALE_ANSWER)
_EDNS_PAYLOAD = 1232


class StaleStore:
    __slots__ = ("answer_ttl", "bytes", "entries", "max_age", "max_bytes", "max_entries")

    def __init__(self, max_age: int, answer_ttl: int, max_entries: int, max_bytes: int) -> None:
        self.max_age = max_age
        self.answer_ttl = answer_ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: dict[bytes, CacheEntry] = {}  # insertion order: oldest stored first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: bytes, entry: CacheEntry) -> None:
        if entry.info.rcode not in (NOERROR, NXDOMAIN):
            return
        entries = self.entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        entries[key] = entry
        self.bytes += entry.size
        while entries and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            oldest = next(iter(entries))
            self.bytes -= entries.pop(oldest).size

    def get(self, key: bytes, now: float) -> CacheEntry | None:
        """The remembered answer for `key` when it expired less than `max_age` seconds ago."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires + self.max_age:
            del self.entries[key]
            self.bytes -= entry.size
            return None
        return entry

    def answer(self, q: Query, entry: CacheEntry) -> bytes:
        """`entry` for the client of `q`: its id and question, TTLs set to `answer_ttl`, EDE 3."""
        info = entry.info
        buf = bytearray(rewrite_response(entry.data, info, q.id, q.question, 0, keep_opt=True))
        ttl = self.answer_ttl
        for off in info.ttl_offsets:
            _U32.pack_into(buf, off, ttl)
        has_opt = info.opt_start >= 0 and info.opt_end == len(buf)
        if not q.edns:
            if has_opt:  # the client sent no OPT: none back (RFC 6891 §7)
                del buf[info.opt_start :]
                _U16.pack_into(buf, 10, _U16.unpack_from(buf, 10)[0] - 1)
            return bytes(buf)
        if has_opt:
            rdlen_at = info.opt_start + 9
            _U16.pack_into(buf, rdlen_at, _U16.unpack_from(buf, rdlen_at)[0] + len(_EDE))
            buf += _EDE
        elif info.opt_start < 0:
            flags = 0x8000 if q.do else 0
            buf += _OPT_HEAD.pack(0, TYPE_OPT, _EDNS_PAYLOAD, flags, len(_EDE)) + _EDE
            _U16.pack_into(buf, 10, _U16.unpack_from(buf, 10)[0] + 1)
        return bytes(buf)
