"""Liveness checks: is a listed address still online at its source? (design §8)

A check asks the authority's configured resolver for the host's addresses, connects to the first
address that accepts a connection and sends one `GET`. It reads the response headers and nothing
else: the connection is aborted as soon as the blank line ending the headers arrives, so no byte
of content is ever consumed, stored or rendered. Redirects are recorded, never followed.

Every network failure becomes a `CheckResult`; "unknown" means the check could not tell, so a
caller counting consecutive "gone" results (K in a row before delisting) should not count it.

A listed site sees the checker and may lie to it ("cloaking": 404 to the checker, content to
everyone else), so a "gone" carries its evidence. Only `STRONG` evidence — every one of at
least two independent resolvers says the name no longer exists or has no address — is
something the site cannot fake alone; an HTTP 404/410/451 or a refused connection is weak, and
the lifecycle sends it to an officer. The checker presents an ordinary browser's user agent and
can reach sites through an egress proxy, so it is not recognisable by its name or addresses.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from blocklist.state import Kind

ONLINE = "online"
GONE = "gone"
UNKNOWN = "unknown"

GONE_STATUSES = frozenset({404, 410, 451})
MAX_ADDRESSES_PER_FAMILY = 2  # bounds the connect attempts: schemes x 4 addresses at most
MAX_INTERIM_RESPONSES = 4  # 1xx responses (e.g. 103 Early Hints) skipped before the real one
MAX_REDIRECT_LENGTH = 2048  # a Location longer than this is truncated in the record

# Evidence behind a "gone" result.
STRONG = "dns"  # every one of two or more resolvers: no such name, or no address
DNS_ONE = "dns-one"  # the same from a single resolver
HTTP = "http"  # HTTP 404/410/451 (the site's own word)
REFUSED = "refused"  # every connection refused (the site's, or its network's, word)
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
# An HTTP/1.x status line; the reason phrase is optional (RFC 9112 §4).
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: [^\r\n]*)?")
# What a canonical entry may hold: printable ASCII without spaces (urls.py escapes the rest).
# Anything else could smuggle a header into the request, so it is refused before any I/O.
_SAFE_TEXT = re.compile(r"[\x21-\x7e]+")
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


def parse_proxy(text: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" of an HTTP CONNECT proxy; ValueError when it is not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"proxy {text[:80]!r} must be host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class LivenessSettings:
    # The DNS resolver used for lookups, chosen by the authority; never the system's.
    resolver_host: str = "127.0.0.1"
    resolver_port: int = 53
    timeout: float = 10.0  # per step (DNS query, connect + TLS handshake, response headers)
    # An ordinary browser's: a checker that names itself is easy to answer with a false 404.
    user_agent: str = BROWSER_USER_AGENT
    http_port: int = 80  # overridable so tests can use loopback ports
    https_port: int = 443
    schemes: tuple[str, ...] = ("https", "http")  # tried in order; the first that connects decides
    max_header_bytes: int = 16384
    concurrency: int = 20
    # A listed name may point at an address inside the authority's own network; the checker
    # must not become a way to make the authority send requests there. Tests allow loopback.
    allow_private_addresses: bool = False
    # More resolvers asked alongside resolver_host (independent ones: another network,
    # another operator). With two or more, a name gone from all of them is strong evidence.
    extra_resolvers: tuple[tuple[str, int], ...] = ()
    # An HTTP CONNECT proxy ("host:port") the checks connect through, so sites do not see the
    # authority's own addresses. Empty: direct.
    proxy: str = ""

    @property
    def resolvers(self) -> tuple[tuple[str, int], ...]:
        return ((self.resolver_host, self.resolver_port), *self.extra_resolvers)

    @property
    def proxy_address(self) -> tuple[str, int] | None:
        return parse_proxy(self.proxy) if self.proxy else None

    def __post_init__(self) -> None:
        # Settings come from configuration: refuse nonsense before any check runs, so that a
        # check itself only ever fails over network trouble, which it reports as a result.
        for host, port in self.resolvers:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"resolver {host!r} must be an IP address") from None
            if not 0 < port < 65536:
                raise ValueError(f"resolver port {port} is out of range")
        if self.proxy:
            parse_proxy(self.proxy)
        if not _HEADER_VALUE.fullmatch(self.user_agent):
            raise ValueError("user_agent must be printable ASCII on one line")
        if not self.schemes or not set(self.schemes) <= set(_DEFAULT_PORTS):
            raise ValueError("schemes must be a non-empty choice of 'https' and 'http'")
        if not self.timeout > 0:
            raise ValueError("timeout must be positive")
        if self.max_header_bytes < 256:
            raise ValueError("max_header_bytes must be at least 256")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        for port in (self.resolver_port, self.http_port, self.https_port):
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is out of range")


@dataclass(frozen=True)
class CheckResult:
    outcome: str  # "online" | "gone" | "unknown"
    detail: str  # short, human: "HTTP 200", "NXDOMAIN", "connect timeout", ...
    http_status: int | None
    redirect: str | None  # Location header when 3xx — recorded, never followed
    address: str | None  # the IP connected to
    scheme: str | None
    elapsed_ms: int
    evidence: str = ""  # for "gone": STRONG, DNS_ONE, HTTP or REFUSED

    @property
    def strong(self) -> bool:
        return self.outcome == GONE and self.evidence == STRONG


@dataclass(frozen=True)
class _Target:
    host: str  # for Host and SNI: a name, a dotted quad or a bracketed IPv6 literal
    literal: str | None  # the address when the host is an IP literal (no DNS then)
    path: str  # request target: path and query


class _ConnectFailed(Exception):
    """One connect attempt failed; `refused` tells whether the host actively said no."""

    def __init__(self, detail: str, refused: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.refused = refused


class _Verdict(Exception):
    """Carries a final (outcome, detail) out of a step, e.g. NXDOMAIN from DNS."""

    def __init__(self, outcome: str, detail: str, evidence: str = "") -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.evidence = evidence


def _tls_context() -> ssl.SSLContext:
    # Not verified on purpose: the question is whether the content is reachable, not whether the
    # host is trustworthy, and abusive hosts often serve expired or self-signed certificates.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])  # never negotiate HTTP/2: we speak HTTP/1.1 only
    return context


_TLS = _tls_context()


def _parse_target(kind: Kind, value: str) -> _Target | None:
    """Host and request path of an entry value, or None when it is not safe to send."""
    if not isinstance(value, str) or not _SAFE_TEXT.fullmatch(value):
        return None
    if kind == Kind.DOMAIN:
        host, path = value, "/"
    elif kind == Kind.URL:
        cut = min((i for i in (value.find("/"), value.find("?")) if i >= 0), default=len(value))
        host, path = value[:cut], value[cut:]
        if not path.startswith("/"):
            path = "/" + path  # canonical values always have a path; be lenient otherwise
    else:
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            return _Target(host, str(ipaddress.IPv6Address(host[1:-1])), path)
        except ValueError:
            return None
    try:
        return _Target(host, str(ipaddress.IPv4Address(host)), path)
    except ValueError:
        pass
    return _Target(host, None, path) if _HOST_NAME.fullmatch(host) else None


def _dns_error(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "DNS timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        # Each error is (server, tcp, port, rcode text or exception, response).
        for error in exc.kwargs.get("errors") or ():
            if isinstance(error[3], str):
                return f"DNS {error[3]}"  # e.g. "DNS SERVFAIL", "DNS REFUSED"
        return "DNS no answer from resolver"
    return f"DNS error ({type(exc).__name__})"


async def _lookup_one(host: str, server: tuple[str, int], timeout: float) -> list[str]:
    """A then AAAA through one resolver; raises _Verdict when DNS decides."""
    resolver = dns.asyncresolver.Resolver(configure=False)  # never the system's resolv.conf
    resolver.port = server[1]  # set before nameservers, which take it as default
    resolver.nameservers = [server[0]]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None  # each check must see the current state of the name
    try:
        name = dns.name.from_text(host)
    except dns.exception.DNSException:
        raise _Verdict(UNKNOWN, "invalid host name") from None

    addresses: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            answer = await resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            if addresses:
                break  # an inconsistent resolver: the A answer is the better evidence
            raise _Verdict(GONE, "NXDOMAIN") from None
        except dns.resolver.NoAnswer:
            continue  # NODATA for this type; the other may still have addresses
        except dns.exception.DNSException as exc:
            if addresses:
                break  # AAAA trouble does not matter when A gave addresses
            raise _Verdict(UNKNOWN, _dns_error(exc)) from None
        found = [rdata.address for rdata in answer]
        addresses.extend(found[:MAX_ADDRESSES_PER_FAMILY])
    if not addresses:
        raise _Verdict(GONE, "no address")
    return addresses


async def _lookup(host: str, settings: LivenessSettings) -> list[str]:
    """Ask every configured resolver. Addresses from any of them mean the name lives; "gone"
    needs every resolver to say so, and is strong evidence only from two or more."""
    answers = await asyncio.gather(
        *(_lookup_one(host, server, settings.timeout) for server in settings.resolvers),
        return_exceptions=True,
    )
    addresses: list[str] = []
    verdicts: list[_Verdict] = []
    for answer in answers:
        if isinstance(answer, _Verdict):
            verdicts.append(answer)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            addresses += [a for a in answer if a not in addresses]
    if addresses:
        return addresses[: 2 * MAX_ADDRESSES_PER_FAMILY]
    if all(v.outcome == GONE for v in verdicts):
        evidence = STRONG if len(verdicts) >= 2 else DNS_ONE
        details = sorted({v.detail for v in verdicts})
        raise _Verdict(GONE, " / ".join(details), evidence)
    unknown = next(v for v in verdicts if v.outcome != GONE)
    if len(verdicts) > 1 and any(v.outcome == GONE for v in verdicts):
        raise _Verdict(UNKNOWN, f"resolvers disagree ({unknown.detail})")
    raise unknown


async def _connect(
    address: str, port: int, scheme: str, host: str, settings: LivenessSettings
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tls = scheme == "https"
    timeout, limit = settings.timeout, settings.max_header_bytes
    proxy = settings.proxy_address
    try:
        async with asyncio.timeout(timeout):
            if proxy is None:
                return await asyncio.open_connection(
                    address,
                    port,
                    ssl=_TLS if tls else None,
                    # SNI names the host; Python leaves SNI out by itself for IP literals.
                    server_hostname=host.strip("[]") if tls else None,
                    ssl_handshake_timeout=timeout if tls else None,
                    limit=limit,
                )
            reader, writer = await _tunnel(proxy, address, port, limit)
            if tls:
                await writer.start_tls(
                    _TLS, server_hostname=host.strip("[]"), ssl_handshake_timeout=timeout
                )
            return reader, writer
    except TimeoutError:
        raise _ConnectFailed("connect timeout") from None
    except ConnectionRefusedError:
        if proxy is not None:
            raise _ConnectFailed("proxy refused the connection") from None
        raise _ConnectFailed("connection refused", refused=True) from None
    except ssl.SSLError:
        raise _ConnectFailed("TLS handshake failed") from None
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED and proxy is None:
            raise _ConnectFailed("connection refused", refused=True) from None
        if isinstance(exc, ConnectionError):
            raise _ConnectFailed("TLS handshake failed" if tls else "connection reset") from None
        raise _ConnectFailed(_os_error_detail(exc)) from None


async def _tunnel(
    proxy: tuple[str, int], address: str, port: int, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An HTTP CONNECT tunnel to address:port. The proxy's refusals are never "gone": what the
    proxy says about the target is not evidence about the content."""
    reader, writer = await asyncio.open_connection(proxy[0], proxy[1], limit=limit)
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"))
    await writer.drain()
    status = _status((await reader.readline()).rstrip(b"\r\n"))
    while (await reader.readline()).rstrip(b"\r\n"):
        pass
    if status != 200:
        writer.transport.abort()
        raise _ConnectFailed(f"proxy answered {status or 'nonsense'}")
    return reader, writer


def _os_error_detail(exc: OSError) -> str:
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return f"connect error ({exc.strerror or type(exc).__name__})".lower()


def _request(target: _Target, scheme: str, port: int, user_agent: str) -> bytes:
    host = target.host.rstrip(".") or target.host
    if port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    # Exactly these headers: no cookies, no Accept-Encoding, nothing identifying beyond the UA.
    lines = [
        f"GET {target.path} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: {user_agent}",
        "Accept: */*",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def _read_head(reader: asyncio.StreamReader, timeout: float, max_bytes: int) -> bytes:
    """The header block of the final response; never a byte past its blank line.

    Read line by line so the read stops exactly at the blank line, whether lines end in CRLF or
    (tolerated, RFC 9112 §2.2) a bare LF; the reader's limit bounds any single line.
    """
    total = 0

    async def line() -> bytes:
        nonlocal total
        try:
            data = await reader.readline()
        except ValueError:  # one line longer than the reader's limit
            raise _Verdict(UNKNOWN, "headers too large") from None
        total += len(data)
        if total > max_bytes:
            raise _Verdict(UNKNOWN, "headers too large")
        if not data.endswith(b"\n"):
            raise _Verdict(UNKNOWN, "connection closed before headers")
        return data.rstrip(b"\r\n")

    async with asyncio.timeout(timeout):
        for _ in range(MAX_INTERIM_RESPONSES + 1):
            lines = [await line()]
            status = _status(lines[0])
            if status is None:
                raise _Verdict(UNKNOWN, "malformed status line")
            while lines[-1]:
                lines.append(await line())
            if not 100 <= status <= 199 or status == 101:
                return b"\r\n".join(lines[:-1])
        raise _Verdict(UNKNOWN, "too many interim responses")


def _status(line: bytes) -> int | None:
    match = _STATUS_LINE.fullmatch(line)
    return int(match.group(1)) if match and 100 <= int(match.group(1)) <= 599 else None


def _location(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"location":
            text = value.strip().decode("latin-1")
            return text[:MAX_REDIRECT_LENGTH]
    return None


def _classify(head: bytes) -> tuple[str, str, int, str | None]:
    status = _status(head.partition(b"\r\n")[0])
    assert status is not None  # _read_head checked it
    detail = f"HTTP {status}"
    if status in GONE_STATUSES:
        return GONE, detail, status, None  # weak evidence: the site's own word
    if status >= 500 or status == 101:
        return UNKNOWN, detail, status, None  # the server's trouble says nothing about content
    redirect = _location(head) if 300 <= status <= 399 else None
    return ONLINE, detail, status, redirect


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    settings: LivenessSettings,
) -> bytes:
    try:
        writer.write(request)
        async with asyncio.timeout(settings.timeout):
            await writer.drain()
        return await _read_head(reader, settings.timeout, settings.max_header_bytes)
    except TimeoutError:
        raise _Verdict(UNKNOWN, "header timeout") from None
    except ConnectionError:
        raise _Verdict(UNKNOWN, "connection reset") from None
    except ssl.SSLError:
        raise _Verdict(UNKNOWN, "TLS error") from None
    except OSError as exc:
        raise _Verdict(UNKNOWN, _os_error_detail(exc)) from None
    finally:
        # Abort, not close: drop whatever body bytes are already buffered and send a reset so
        # the server stops sending. Nothing after the headers is ever read.
        writer.transport.abort()


async def _check(kind: Kind, value: str, settings: LivenessSettings, started: float) -> CheckResult:
    def result(
        outcome: str,
        detail: str,
        status: int | None = None,
        redirect: str | None = None,
        address: str | None = None,
        scheme: str | None = None,
        evidence: str = "",
    ) -> CheckResult:
        elapsed = int((time.monotonic() - started) * 1000)
        if outcome == GONE and not evidence:
            evidence = HTTP
        return CheckResult(outcome, detail, status, redirect, address, scheme, elapsed, evidence)

    target = _parse_target(kind, value)
    if target is None:
        return result(UNKNOWN, "invalid entry value")
    try:
        addresses = [target.literal] if target.literal else await _lookup(target.host, settings)
    except _Verdict as verdict:
        return result(verdict.outcome, verdict.detail, evidence=verdict.evidence)
    if not settings.allow_private_addresses:
        addresses = [a for a in addresses if ipaddress.ip_address(a).is_global]
        if not addresses:
            return result(UNKNOWN, "only non-public addresses")

    failures: list[_ConnectFailed] = []
    for scheme in settings.schemes:
        port = settings.https_port if scheme == "https" else settings.http_port
        request = _request(target, scheme, port, settings.user_agent)
        for address in addresses:
            try:
                reader, writer = await _connect(address, port, scheme, target.host, settings)
            except _ConnectFailed as failure:
                failures.append(failure)
                continue
            # The first connection decides: what it says (or fails to say) is the answer.
            try:
                head = await _exchange(reader, writer, request, settings)
            except _Verdict as verdict:
                return result(verdict.outcome, verdict.detail, address=address, scheme=scheme)
            outcome, detail, status, redirect = _classify(head)
            return result(outcome, detail, status, redirect, address, scheme)

    if all(failure.refused for failure in failures):  # schemes is never empty
        return result(GONE, "connection refused", evidence=REFUSED)
    # A timeout anywhere means something may be listening: prefer it over other errors.
    timeouts = [f for f in failures if f.detail == "connect timeout"]
    worst = timeouts[0] if timeouts else next(f for f in failures if not f.refused)
    return result(UNKNOWN, worst.detail)


async def check_entry(kind: Kind, value: str, settings: LivenessSettings) -> CheckResult:
    """Whether the content at a listed entry is still online; never reads a response body."""
    return await _check(kind, value, settings, time.monotonic())


async def check_many(
    targets: Iterable[tuple[int, Kind, str]], settings: LivenessSettings
) -> dict[int, CheckResult]:
    """Check (entry id, kind, value) targets, at most `settings.concurrency` at a time."""
    results: dict[int, CheckResult] = {}
    # A semaphore bounds the open checks; targets are drawn lazily, so a long list costs no
    # more than `concurrency` tasks at any moment.
    slots = asyncio.Semaphore(settings.concurrency)

    async def run(entry_id: int, kind: Kind, value: str) -> None:
        try:
            results[entry_id] = await check_entry(kind, value, settings)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for entry_id, kind, value in targets:
            await slots.acquire()
            group.create_task(run(entry_id, kind, value))
    return results
