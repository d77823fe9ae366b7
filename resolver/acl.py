"""The client ACL: which source addresses may use the resolver (never an open resolver).

Decisions are memoised per address string in a bounded dict, so the hot path pays one dict
lookup; the networks themselves are checked once per new address.
"""

from __future__ import annotations

import ipaddress

LOOPBACK = ("127.0.0.0/8", "::1/128")
_MEMO_MAX = 65536


class Acl:
    __slots__ = ("_memo", "_v4", "_v6")

    def __init__(self, networks: list[str], allow_loopback: bool = True) -> None:
        nets = [ipaddress.ip_network(n, strict=False) for n in networks]
        if allow_loopback:
            nets += [ipaddress.ip_network(n) for n in LOOPBACK]
        self._v4 = [n for n in nets if n.version == 4]
        self._v6 = [n for n in nets if n.version == 6]
        self._memo: dict[str, bool] = {}

    def _check(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        nets = self._v4 if addr.version == 4 else self._v6
        return any(addr in n for n in nets)

    def networks(self, version: int) -> list:
        return list(self._v4 if version == 4 else self._v6)

    def allowed(self, host: str) -> bool:
        ok = self._memo.get(host)
        if ok is None:
            ok = self._check(host)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[host] = ok
        return ok
