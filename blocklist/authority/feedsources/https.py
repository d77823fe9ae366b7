"""A feed file over HTTPS: conditional GET, bounded size, pinned certificate.

With `cert_sha256` the server must present exactly that certificate (SHA-256 of its DER form);
the usual CA check is replaced by the pin, so a feed provider's private CA or self-signed
certificate works and a mis-issued public certificate does not. Without a pin, the CA system
is trusted for transport and the file must carry a detached signature (see `refresh`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from blocklist.authority.feedsources.formats import MAX_FEED_BYTES


class FetchRefused(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    status: int  # 200 or 304
    body: bytes
    etag: str
    last_modified: str


def _ssl(url: str, cert_sha256: str) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
    if not url.startswith("https://"):
        return False
    if cert_sha256:
        return aiohttp.Fingerprint(bytes.fromhex(cert_sha256.replace(":", "")))
    return True


async def fetch(
    url: str,
    *,
    cert_sha256: str = "",
    etag: str = "",
    last_modified: str = "",
    limit: int = MAX_FEED_BYTES,
    timeout: float = 60,
) -> Fetched:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                url,
                headers=headers,
                ssl=_ssl(url, cert_sha256),
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp,
        ):
            if resp.status == 304:
                return Fetched(304, b"", etag, last_modified)
            if resp.status != 200:
                raise FetchRefused(f"{url} answered {resp.status}")
            if resp.content_length is not None and resp.content_length > limit:
                raise FetchRefused(f"{url} is {resp.content_length} bytes, more than {limit}")
            data = await resp.content.read(limit + 1)
            while len(data) <= limit and (more := await resp.content.read(limit + 1 - len(data))):
                data += more
            if len(data) > limit:
                raise FetchRefused(f"{url} sent more than {limit} bytes")
            return Fetched(
                200, data, resp.headers.get("ETag", ""), resp.headers.get("Last-Modified", "")
            )
    except aiohttp.ServerFingerprintMismatch as exc:
        raise FetchRefused(
            f"{url} presented certificate {exc.got.hex()}, not the pinned {exc.expected.hex()}"
        ) from None
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        raise FetchRefused(f"cannot fetch {url}: {exc.__class__.__name__}: {exc}") from None
