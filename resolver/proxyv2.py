"""PROXY protocol v2 from trusted senders (dnsdist, HAProxy) on UDP and TCP.

A load balancer in front of the resolver prefixes each UDP datagram, and each TCP connection,
with a PROXY v2 header naming the real client, so the ACL and the rate limits apply to the
client and not to the balancer. Only senders in `proxy.trusted` may do so: their datagrams and
connections must start with a valid header (else dropped or closed, counted as errors); a
header from any other sender is refused (dropped or closed, counted): it would let anyone pose
as an allowed client. The LOCAL command (health checks) keeps the sender as the client.
Answers go back to the sender, without a header.

This is the reference; the C fast path has a twin (resolver/_proxy.h) that accepts and refuses
the same bytes.
"""

from __future__ import annotations

import socket

from resolver.acl import Acl

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED = 16
MAX_LEN = 512  # addresses and TLVs after the fixed part


def parse(data: bytes) -> tuple[str | None, int] | None:
    """(client address, or None for LOCAL; header length), or None when malformed or short."""
    if len(data) < FIXED or data[:12] != SIGNATURE:
        return None
    version, cmd, af = data[12] >> 4, data[12] & 0x0F, data[13] >> 4
    length = data[14] << 8 | data[15]
    end = FIXED + length
    if version != 2 or length > MAX_LEN or end > len(data):
        return None
    if cmd == 0:
        return None, end
    if cmd != 1:
        return None
    if af == 1 and length >= 12:
        return socket.inet_ntop(socket.AF_INET, data[16:20]), end
    if af == 2 and length >= 36:
        return socket.inet_ntop(socket.AF_INET6, data[16:32]), end
    return None


def needed(data: bytes) -> int:
    """Bytes a TCP stream must hold before `parse` can decide (the whole header)."""
    if len(data) < FIXED:
        return FIXED
    return FIXED + min(data[14] << 8 | data[15], MAX_LEN + 1)


class ProxyTrust:
    """Who may send PROXY headers, and what happened to the headers seen."""

    __slots__ = ("errors", "refused", "senders")

    def __init__(self, trusted: list[str]) -> None:
        self.senders = Acl(trusted, allow_loopback=False)
        self.refused = 0  # headers from senders not trusted
        self.errors = 0  # trusted senders' datagrams or connections without a valid header

    def strip(self, data: bytes, sender: str) -> tuple[bytes, str] | None:
        """(the DNS message, the client it is from) for one datagram, or None to drop it."""
        if self.senders.allowed(sender):
            parsed = parse(data)
            if parsed is None:
                self.errors += 1
                return None
            client, end = parsed
            return data[end:], client or sender
        if data[:12] == SIGNATURE:
            self.refused += 1
            return None
        return data, sender

    def counts(self) -> tuple[int, int]:
        return self.refused, self.errors


class FastProxyTrust(ProxyTrust):
    """With the fast path, UDP headers are checked in C; the counters add both."""

    __slots__ = ("engine",)

    def __init__(self, trusted: list[str], engine) -> None:
        super().__init__(trusted)
        self.engine = engine
        engine.set_proxy(
            [(int(n.network_address), n.prefixlen) for n in self.senders.networks(4)],
            [(n.network_address.packed, n.prefixlen) for n in self.senders.networks(6)],
        )

    def counts(self) -> tuple[int, int]:
        c_refused, c_errors = self.engine.proxy_counts()
        return self.refused + c_refused, self.errors + c_errors


def make_trust(trusted: list[str], engine=None) -> ProxyTrust | None:
    if not trusted:
        if engine is not None:
            engine.set_proxy(None)
        return None
    return ProxyTrust(trusted) if engine is None else FastProxyTrust(trusted, engine)
