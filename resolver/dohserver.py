"""DNS over HTTPS connections: HTTP/2 (ALPN "h2", with h2) or HTTP/1.1 (with h11) inside TLS.

Both libraries are sans-I/O, like resolver.doh: this module only moves bytes between the TLS
transport and them, and hands each request's DNS message to `Resolver.handle` (then `forward`
when it must go upstream), exactly as a TCP query is handled. Bounds: the listener's
max_connections, an idle timeout, max_streams requests in flight per HTTP/2 connection
(SETTINGS_MAX_CONCURRENT_STREAMS; HTTP/1.1 answers one request at a time), and request bodies
of at most one DNS message. A client that does not read makes us stop reading it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

from resolver.acl import Acl
from resolver.dnswire import MAX_TCP_MESSAGE, REFUSED, Query, error_response
from resolver.doh import MAX_TARGET, DohError, answer_headers, dns_query, error_headers
from resolver.engine import Resolver
from resolver.ratelimit import ALLOW
from resolver.server import StreamConnection, StreamLimits

# h2's own header checks are off: they cost a quarter of its time per request, our headers are
# fixed and valid, and what a request carries is checked where it is read (resolver.doh: the
# method, the path, the media type; anything missing is an HTTP error).
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
_MAX_HEADER_LIST = 16384
# Request bodies held at once on one HTTP/2 connection (requests still arriving): two maximal
# DNS messages. A client that opens streams and trickles bodies cannot hold more memory.
MAX_BUFFERED = 2 * MAX_TCP_MESSAGE


class DohConnection(StreamConnection):
    def __init__(self, resolver: Resolver, acl: Acl, limits: StreamLimits, path: str) -> None:
        super().__init__(resolver, acl, limits)
        self.path = path.encode()
        self.http: _Http2 | _Http1 | None = None

    # ------------------------------------------------------------------ connection

    def _started(self) -> None:
        ssl_object = self.transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.http = _Http2(self) if alpn == "h2" else _Http1(self)

    def _active(self) -> bool:
        return self.activity or bool(self.tasks)  # an answer still on its way counts

    def data_received(self, data: bytes) -> None:
        # Only whole requests and answers count as activity: a client that trickles bytes, or
        # only pings, is closed at the idle timeout like a silent one.
        if self.closed or self.http is None:
            return
        try:
            self.http.receive(data)
        except Exception:
            self.resolver.errors.report("DoH connection")
            self.protocol_error()

    def write(self, data: bytes) -> None:
        if data and not self.closed:
            self.transport.write(data)

    def protocol_error(self) -> None:
        self.limits.counts.errors += 1
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if not self.closed:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ requests

    def request(
        self, ref: Any, method: bytes, target: bytes, content_type: bytes | None, body: bytes
    ) -> None:
        """Answer one HTTP request; `ref` tells the HTTP layer which request it was."""
        http = self.http
        assert http is not None
        resolver = self.resolver
        try:
            message = dns_query(method, target, self.path, content_type, body)
        except DohError as exc:
            self.reject(ref, exc)
            return
        self.limits.counts.queries += 1
        self.activity = True
        try:
            limiter = resolver.limiter
            if limiter is not None and limiter.check(self.host, resolver.now()) != ALLOW:
                result = error_response(message, REFUSED)  # over the limit, as on TCP
            else:
                result = resolver.handle(message, self.allowed, False)
        except Exception:
            resolver.errors.report("DoH query")
            result = None
        if result is None:
            self.reject(ref, DohError(400, "not a DNS query"))
        elif result.__class__ is bytes:
            http.respond(ref, 200, answer_headers(result), result)  # type: ignore[arg-type]
        else:
            task = asyncio.get_running_loop().create_task(self._forward(ref, result))  # type: ignore[arg-type]
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def reject(self, ref: Any, error: DohError) -> None:
        stats = self.resolver.stats.doh_status
        stats[error.status] = stats.get(error.status, 0) + 1
        self.http.respond(ref, error.status, *error_headers(error))  # type: ignore[union-attr]

    async def _forward(self, ref: Any, query: Query) -> None:
        try:
            answer = await self.resolver.forward(query, False)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.resolver.errors.report("DoH forward")
            return
        if not self.closed:
            self.activity = True
            self.http.respond(ref, 200, answer_headers(answer), answer)  # type: ignore[union-attr]


class _Http2:
    """HTTP/2 (RFC 9113) through h2: a request is a stream; answers go out in any order."""

    def __init__(self, conn: DohConnection) -> None:
        self.conn = conn
        self.h2 = h2.connection.H2Connection(config=_H2_CONFIG)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: conn.limits.max_pipelined,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        self.streams: dict[int, list] = {}  # id -> [method, target, content type, body]
        self.buffered = 0  # bytes of bodies in `streams`
        self.unsent: dict[int, bytes] = {}  # answers waiting for flow-control window
        conn.write(self.h2.data_to_send())

    def receive(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.conn.write(self.h2.data_to_send())
            self.conn.protocol_error()
            return
        for event in events:
            if self.conn.closed:
                return
            if isinstance(event, h2.events.RequestReceived):
                self._headers(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._drop(event.stream_id)
                self.unsent.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._flush()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.conn.write(self.h2.data_to_send())
                self.conn.close()
                return
        self.conn.write(self.h2.data_to_send())

    def _headers(self, event: h2.events.RequestReceived) -> None:
        fields = {}
        for name, value in event.headers:
            fields.setdefault(name, value)
        self.streams[event.stream_id] = [
            fields.get(b":method", b""),
            fields.get(b":path", b""),
            fields.get(b"content-type"),
            bytearray(),
        ]
        if event.stream_ended is not None:
            self._ended(event.stream_id)

    def _data(self, event: h2.events.DataReceived) -> None:
        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        stream[3] += event.data
        self.buffered += len(event.data)
        if len(stream[3]) > MAX_TCP_MESSAGE:
            self._drop(event.stream_id)
            self.conn.reject(event.stream_id, DohError(413, "a DNS message is at most 65535 bytes"))
        elif self.buffered > MAX_BUFFERED:
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self.conn.write(self.h2.data_to_send())
            self.conn.protocol_error()

    def _drop(self, stream_id: int) -> list | None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self.buffered -= len(stream[3])
        return stream

    def _ended(self, stream_id: int) -> None:
        stream = self._drop(stream_id)
        if stream is not None:
            method, target, content_type, body = stream
            self.conn.request(stream_id, method, target, content_type, bytes(body))

    def respond(self, stream_id: int, status: int, headers: list, body: bytes) -> None:
        try:
            self.h2.send_headers(stream_id, [(b":status", b"%d" % status), *headers])
        except h2.exceptions.H2Error:
            return  # the stream was reset or closed meanwhile
        self.unsent[stream_id] = body
        self._flush()
        # Each answer is written at once: gathering the answers to one read into one write
        # made dnsperf 2.10's DoH client lose all but one of them.
        self.conn.write(self.h2.data_to_send())

    def _flush(self) -> None:
        """Send what the flow-control windows allow; the rest waits for WINDOW_UPDATE."""
        for stream_id in list(self.unsent):
            body = self.unsent[stream_id]
            try:
                room = min(
                    self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
                )
                while body and room > 0:
                    chunk, body = body[:room], body[room:]
                    self.h2.send_data(stream_id, chunk)
                    room = min(
                        self.h2.local_flow_control_window(stream_id),
                        self.h2.max_outbound_frame_size,
                    )
                if body:
                    self.unsent[stream_id] = body
                    continue
                self.h2.end_stream(stream_id)
            except h2.exceptions.H2Error:
                pass  # reset by the client meanwhile
            del self.unsent[stream_id]


class _Http1:
    """HTTP/1.1 through h11: one request at a time (pipelined ones wait their turn)."""

    def __init__(self, conn: DohConnection) -> None:
        self.conn = conn
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_TARGET + 8192)
        self.current: list | None = None
        self.busy = False

    def receive(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._next()

    def _next(self) -> None:
        while not self.busy and not self.conn.closed:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                headers = dict(event.headers)
                self.current = [event.method, event.target, headers.get(b"content-type"), b""]
            elif isinstance(event, h11.Data) and self.current is not None:
                self.current[3] += event.data
                if len(self.current[3]) > MAX_TCP_MESSAGE:
                    self.current = None
                    self.busy = True
                    self.conn.reject(None, DohError(413, "a DNS message is at most 65535 bytes"))
                    return
            elif isinstance(event, h11.EndOfMessage) and self.current is not None:
                method, target, content_type, body = self.current
                self.current = None
                self.busy = True
                self.conn.request(None, method, target, content_type, body)
            elif isinstance(event, h11.ConnectionClosed):
                self.conn.close()
                return

    def _fail(self, status: int) -> None:
        self.conn.limits.counts.errors += 1
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers, body = error_headers(DohError(status, "malformed HTTP request"))
            try:
                self.conn.write(self.h11.send(h11.Response(status_code=status, headers=headers)))
                self.conn.write(self.h11.send(h11.Data(data=body)))
                self.conn.write(self.h11.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.conn.close()

    def respond(self, _ref: None, status: int, headers: list, body: bytes) -> None:
        if self.conn.closed:
            return
        h = self.h11
        try:
            self.conn.write(h.send(h11.Response(status_code=status, headers=headers)))
            self.conn.write(h.send(h11.Data(data=body)))
            self.conn.write(h.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            self.conn.close()
            return
        if h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE:
            self.conn.close()
            return
        if h.their_state is h11.DONE:
            h.start_next_cycle()
            self.busy = False
            self._next()
        else:  # answered before the whole body arrived (413): no next request on this one
            self.conn.close()
