"""`address[:port]` as the configuration files write resolvers: the resolver's upstreams,
NOTIFY targets and secondaries, the authority's extra liveness resolvers."""

from __future__ import annotations

import ipaddress


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts "²"


def parse_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """'192.0.2.1', '192.0.2.1:5353', '2001:db8::1', '[2001:db8::1]:5353' -> (address, port).

    Addresses only: resolving a name here would need a resolver."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":") or not _digits(rest[1:]):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not _digits(port_text):
            raise ValueError(f"{text!r}: the port is not a number")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: not an IP address (give an address, not a name)") from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return host, port
