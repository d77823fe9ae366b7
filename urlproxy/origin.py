"""Finding a diverted host's real origin: its addresses from the configured recursive resolvers.

Never the system resolver, which on an ASP's machine may be the Cordon resolver that diverts
the host to this proxy: the proxy would then connect to itself. Answers are cached for their
TTL (names only; content is never cached). Addresses the proxy must not connect to are dropped:
its own listen addresses always, and loopback, private, link-local and reserved ranges unless
`allow_private_addresses` (a list entry must not open a way into the ASP's network).
"""

from __future__ import annotations

import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult

from resolver.config import parse_hostport


class OriginUnreachable(OSError):
    """No usable address for the origin (name error, resolvers down, or a refused address)."""


class OriginResolver(AbstractResolver):
    def __init__(
        self,
        servers: list[str],
        *,
        allow_private: bool,
        own_addresses: list[str],
        timeout: float = 3.0,
    ) -> None:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(*parse_hostport(s)) for s in servers]
        r.lifetime = timeout
        r.cache = dns.resolver.LRUCache(10000)
        self._resolver = r
        self._allow_private = allow_private
        self._own = {ipaddress.ip_address(a) for a in own_addresses}

    def usable(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if ip in self._own or ip.is_unspecified or ip.is_multicast:
            return False
        if self._allow_private:
            return True
        return ip.is_global

    async def addresses(self, host: str) -> list[str]:
        """Usable addresses of `host`, IPv6 then IPv4; OriginUnreachable when none."""
        found: list[str] = []
        for rdtype in ("AAAA", "A"):
            try:
                answer = await self._resolver.resolve(host, rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise OriginUnreachable(f"no answer from the origin resolvers: {exc}") from None
            found += [rr.address for rr in answer]
        usable = [a for a in found if self.usable(a)]
        if not usable:
            raise OriginUnreachable("the origin has no usable address")
        return usable

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        out: list[ResolveResult] = []
        for a in await self.addresses(host):
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam) and family != 0:
                continue
            out.append(
                {
                    "hostname": host,
                    "host": a,
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not out:
            raise OriginUnreachable("the origin has no usable address of the wanted family")
        return out

    async def close(self) -> None:
        pass
