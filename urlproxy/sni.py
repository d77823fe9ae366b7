"""The server name in a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3), read without decrypting.

Sans-I/O: `client_hello_name(buffer)` looks at the bytes received so far and says whether more
are needed, the hello is not one we can route, or which name it asks for. Only the first TLS
record is read, up to MAX_HELLO bytes; a ClientHello split over several records (rare, possible
with very large post-quantum key shares) is refused rather than reassembled.
"""

from __future__ import annotations

MAX_HELLO = 16384 + 5  # one TLS record
NEED_MORE = "need_more"


class NotRoutable(ValueError):
    """The bytes are not a TLS ClientHello with a usable server name."""


def client_hello_name(data: bytes) -> str:
    """The SNI host name, NEED_MORE, or NotRoutable."""
    if len(data) < 5:
        return NEED_MORE
    if data[0] != 0x16 or data[1] != 0x03:
        raise NotRoutable("not a TLS handshake record")
    length = int.from_bytes(data[3:5], "big")
    if length > MAX_HELLO - 5:
        raise NotRoutable("record too long")
    if len(data) < 5 + length:
        return NEED_MORE
    body = data[5 : 5 + length]
    try:
        return _hello_name(body)
    except IndexError:
        raise NotRoutable("truncated ClientHello") from None


def _hello_name(b: bytes) -> str:
    if b[0] != 0x01:
        raise NotRoutable("first handshake message is not a ClientHello")
    hs_len = int.from_bytes(b[1:4], "big")
    if hs_len + 4 > len(b):
        raise NotRoutable("ClientHello spans several records")
    p = 4 + 2 + 32  # version, random
    p += 1 + b[p]  # session id
    p += 2 + int.from_bytes(b[p : p + 2], "big")  # cipher suites
    p += 1 + b[p]  # compression methods
    if p + 2 > 4 + hs_len:
        raise NotRoutable("no extensions, so no server name")
    end = p + 2 + int.from_bytes(b[p : p + 2], "big")
    p += 2
    if end > 4 + hs_len:
        raise NotRoutable("extensions overrun the ClientHello")
    while p + 4 <= end:
        ext_type = int.from_bytes(b[p : p + 2], "big")
        ext_len = int.from_bytes(b[p + 2 : p + 4], "big")
        p += 4
        if p + ext_len > end:
            raise NotRoutable("extension overruns the ClientHello")
        if ext_type == 0:  # server_name
            q = p + 2
            stop = p + ext_len
            while q + 3 <= stop:
                name_type = b[q]
                name_len = int.from_bytes(b[q + 1 : q + 3], "big")
                q += 3
                if q + name_len > stop:
                    raise NotRoutable("server name overruns its extension")
                if name_type == 0:
                    raw = b[q : q + name_len]
                    if not raw or len(raw) > 253 or not raw.isascii():
                        raise NotRoutable("bad server name")
                    return raw.decode("ascii")
                q += name_len
            raise NotRoutable("no host name in the server_name extension")
        p += ext_len
    raise NotRoutable("no server_name extension")
