"""Plain HTTP through the proxy: listed URLs to the stop page, everything else to the origin.

Both directions are streamed (nothing is buffered beyond aiohttp's read chunks, so a large or
endless body costs no memory), keep-alive on both sides, hop-by-hop headers dropped (RFC 9110
§7.6.1), no cookie jar, no decompression, no redirects followed, no cache, no access log. The
origin sees the client's request as sent, minus hop-by-hop headers; nothing is added (no Via,
no X-Forwarded-For). Cleartext WebSocket (and any other Upgrade) is refused with 501: the proxy
cannot inspect what follows, and wss:// (the usual case) passes through the TLS splice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from urlproxy.config import UrlProxyConfig
from urlproxy.lookup import COMPLAINT_PATHS, ProxyList, Route, complaint_post
from urlproxy.metrics import ProxyMetrics
from urlproxy.origin import OriginResolver, OriginUnreachable

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
MAX_FORM_PEEK = 16384  # a stop-page form (complaint, status lookup) is far smaller
CHUNK = 65536
SMALL_BODY = 16384  # responses up to this size are sent in one write

_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>{title}</title>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


def neutral_page(status: int, title: str, text: str) -> web.Response:
    """A small page that names nothing about the request (no host, no path)."""
    return web.Response(
        status=status,
        text=_PAGE.format(title=title, text=text),
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'"},
    )


def bad_gateway() -> web.Response:
    return neutral_page(502, "Site unreachable", "The site did not answer. Please try again later.")


def end_to_end(headers) -> CIMultiDict:
    """`headers` without the hop-by-hop ones, including those named by Connection."""
    named = set(HOP_BY_HOP)
    for value in headers.getall("Connection", ()):
        named.update(v.strip().lower() for v in value.split(","))
    out: CIMultiDict = CIMultiDict()
    for k, v in headers.items():
        if k.lower() not in named:
            out.add(k, v)
    return out


class BodyTooLarge(Exception):
    pass


class PlainProxy:
    def __init__(
        self, config: UrlProxyConfig, metrics: ProxyMetrics, resolver: OriginResolver
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.list = ProxyList(None)
        o = config.origin
        self._origin_port = o.http_port
        self._max_body = config.server.max_request_body
        self._body_idle = config.server.body_idle_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=o.connect_timeout, sock_read=o.read_timeout
        )
        self._stop_page = config.stop_page.url.rstrip("/")
        self._resolver = resolver
        self.origin_session: aiohttp.ClientSession | None = None
        self.stop_session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        o = self.config.origin
        common = {
            "auto_decompress": False,
            "cookie_jar": aiohttp.DummyCookieJar(),  # never carry one visitor's cookies to another
            "skip_auto_headers": _SKIP_AUTO,
            "timeout": self._timeout,
            "max_line_size": o.max_response_header_bytes,
            "max_field_size": o.max_response_header_bytes,
        }
        connector = aiohttp.TCPConnector(
            resolver=self._resolver, limit=o.max_connections, use_dns_cache=False
        )
        self.origin_session = aiohttp.ClientSession(connector=connector, **common)
        self.stop_session = aiohttp.ClientSession(**common)

    async def close(self) -> None:
        for s in (self.origin_session, self.stop_session):
            if s is not None:
                await s.close()

    # ------------------------------------------------------------------ handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "Upgrade" in request.headers:
            self.metrics.requests.labels("refused").inc()
            return neutral_page(501, "Not supported", "This connection cannot be upgraded.")
        lst = self.list
        raw = request.raw_path
        if not raw.startswith("/"):  # absolute-form: this is not a forward proxy
            self.metrics.requests.labels("refused").inc()
            return neutral_page(400, "Bad request", "This server is not a forward proxy.")
        route, host = lst.route(request.headers.get("Host", ""), raw)
        peeked: bytes | None = None
        if route is Route.ORIGIN and request.path in COMPLAINT_PATHS:
            assert host is not None
            if request.method in ("GET", "HEAD"):
                if lst.complaint_for_listed(host, request.path, request.query_string):
                    route = Route.STOP_PAGE
            elif request.method == "POST":
                peeked = await self._peek_form(request)
                if peeked is not None and complaint_post(request.path, _fields(peeked)):
                    route = Route.STOP_PAGE
        self.metrics.requests.labels(route.value).inc()
        if route is Route.REFUSED:
            return neutral_page(
                421, "Misdirected request", "This server does not serve this address."
            )
        # The path and query go on exactly as sent (no normalisation: the origin must see the
        # request the client made).
        if route is Route.STOP_PAGE:
            url = URL(f"{self._stop_page}{raw}", encoded=True)
            return await self._forward(request, self.stop_session, url, peeked, "stop_page")
        url = URL(f"http://{host}:{self._origin_port}{raw}", encoded=True)
        return await self._forward(request, self.origin_session, url, peeked, "origin")

    async def _peek_form(self, request: web.Request) -> bytes | None:
        """The body of a small POST (read whole, to tell a stop-page form from the origin's)."""
        length = request.content_length
        if length is None or length > MAX_FORM_PEEK:
            return None
        try:
            return await asyncio.wait_for(request.content.readexactly(length), self._body_idle)
        except (TimeoutError, asyncio.IncompleteReadError):
            raise web.HTTPBadRequest(text="incomplete request body") from None

    async def _body(self, request: web.Request, peeked: bytes | None) -> AsyncIterator[bytes]:
        if peeked is not None:
            yield peeked
            return
        seen = 0
        content, idle = request.content, self._body_idle
        while True:
            chunk = await asyncio.wait_for(content.readany(), idle)  # a stalled upload ends
            if not chunk:
                return
            seen += len(chunk)
            if seen > self._max_body:
                raise BodyTooLarge
            yield chunk

    async def _forward(
        self,
        request: web.Request,
        session: aiohttp.ClientSession | None,
        url: URL,
        peeked: bytes | None,
        target: str,
    ) -> web.StreamResponse:
        assert session is not None
        length = request.content_length
        if length is not None and length > self._max_body:
            return neutral_page(413, "Request too large", "The request body is too large.")
        headers = end_to_end(request.headers)
        has_body = request.body_exists or peeked is not None
        data = self._body(request, peeked) if has_body else None
        try:
            upstream = await session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
                chunked=None if length is not None or not has_body else True,
            )
        except BodyTooLarge:
            return neutral_page(413, "Request too large", "The request body is too large.")
        except TimeoutError:
            self.metrics.origin_errors.labels(target, "timeout").inc()
            return neutral_page(504, "Site too slow", "The site did not answer in time.")
        except (OriginUnreachable, aiohttp.ClientError, OSError) as exc:
            kind = "unreachable" if isinstance(exc, OriginUnreachable) else "connect"
            if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ServerDisconnectedError):
                kind = "bad_response"
            self.metrics.origin_errors.labels(target, kind).inc()
            return bad_gateway()
        async with upstream:
            length = upstream.content_length if "Content-Length" in upstream.headers else None
            if length is not None and length <= SMALL_BODY and request.method != "HEAD":
                # A small body is read whole and sent with the headers in one write: a third
                # fewer system calls per request; memory stays bounded by SMALL_BODY.
                try:
                    body = await upstream.content.readexactly(length)
                except (TimeoutError, aiohttp.ClientError, OSError, asyncio.IncompleteReadError):
                    self.metrics.origin_errors.labels(target, "bad_response").inc()
                    return bad_gateway()
                small = web.Response(status=upstream.status, reason=upstream.reason, body=body)
                small.headers.update(end_to_end(upstream.headers))
                return small
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.update(end_to_end(upstream.headers))
            if length is not None:
                response.content_length = length
            try:
                await response.prepare(request)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                return response  # the client left: nothing to send, the origin is let go
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                return response  # the client left mid-body
            except (TimeoutError, aiohttp.ClientError, OSError):
                # The response has started: the only honest signal left is to cut it short.
                self.metrics.origin_errors.labels(target, "cut").inc()
                if request.transport is not None:
                    request.transport.close()
                return response
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
                await response.write_eof()
            return response


def _fields(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}
