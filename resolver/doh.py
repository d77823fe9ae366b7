"""DNS over HTTPS (RFC 8484) as plain values: an HTTP request in, a DNS message or an HTTP
error out; a DNS answer in, the response headers out. No sockets here (resolver.dohserver
carries these over HTTP/2 and HTTP/1.1).
"""

from __future__ import annotations

import binascii
import re
from urllib.parse import parse_qsl

from resolver.dnswire import MAX_TCP_MESSAGE, inspect_response

CONTENT_TYPE = b"application/dns-message"
ALLOW = b"GET, POST"
# RFC 8484 §4.1: base64url (RFC 4648 §5) without padding; padding is tolerated here.
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
# The longest GET target we read: a 65535-byte message is 87,380 base64 characters.
MAX_TARGET = 90_000


class DohError(Exception):
    """An HTTP error status for a request that carries no usable DNS query."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_base64url(text: bytes) -> bytes:
    """RFC 4648 §5 without padding (padding accepted); DohError 400 names what is wrong."""
    if not _BASE64URL.fullmatch(text):
        raise DohError(400, "the dns parameter is not base64url (RFC 4648 §5)")
    text = text.rstrip(b"=")
    if len(text) % 4 == 1:
        raise DohError(400, "the dns parameter has a length no base64url text can have")
    try:
        return binascii.a2b_base64(
            text.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(text) % 4),
            strict_mode=True,
        )
    except binascii.Error:
        raise DohError(400, "the dns parameter is not base64url (RFC 4648 §5)") from None


def _media_type(value: bytes | None) -> bytes:
    return (value or b"").split(b";", 1)[0].strip().lower()


def dns_query(
    method: bytes, target: bytes, path: bytes, content_type: bytes | None, body: bytes
) -> bytes:
    """The DNS message an HTTP request carries (RFC 8484 §4.1), or DohError with the status."""
    route, _, query = target.partition(b"?")
    if route != path:
        raise DohError(404, f"no DNS endpoint here: it is {path.decode()}")
    if method == b"GET":
        if len(target) > MAX_TARGET:
            raise DohError(414, "the request target is longer than any DNS message needs")
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        values = [v for k, v in pairs if k == "dns"]
        if len(values) != 1:
            raise DohError(400, "a GET request needs exactly one dns parameter")
        message = decode_base64url(values[0].encode("latin-1"))
    elif method == b"POST":
        if _media_type(content_type) != CONTENT_TYPE:
            raise DohError(415, "a POST body must be application/dns-message")
        if len(body) > MAX_TCP_MESSAGE:
            raise DohError(413, "a DNS message is at most 65535 bytes")
        message = body
    else:
        raise DohError(405, "use GET or POST")
    if len(message) < 12:
        raise DohError(400, "not a DNS message (shorter than its 12-byte header)")
    return message


def answer_headers(answer: bytes) -> list[tuple[bytes, bytes]]:
    """Headers of a 200 response: the media type, the length, and a freshness lifetime no
    longer than the answer's smallest TTL (RFC 8484 §5.1)."""
    info = inspect_response(answer)
    ttl = info.ttl if info is not None and info.ttl is not None else 0
    return [
        (b"content-type", CONTENT_TYPE),
        (b"content-length", str(len(answer)).encode()),
        (b"cache-control", b"max-age=%d" % ttl),
    ]


def error_headers(error: DohError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and a short plain-text body for an HTTP error."""
    body = error.reason.encode() + b"\n"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if error.status == 405:
        headers.append((b"allow", ALLOW))
    return headers, body
