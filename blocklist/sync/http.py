"""HTTP adapter of the sync client: mirrors in order, the token for the authority only.

- `notification_urls` is an ordered list (static hosts, CDNs, the authority API); each poll
  starts with the first and falls back to the next on an error, recording why.
- The bearer token goes only to the authority's own API origin (scheme, host and port of
  `authority_url`), per request and never on a redirect: a third-party mirror or CDN never
  sees it. Long-poll query parameters go only there too; static hosts get a plain GET, which
  caches well.
- Notifications are fetched with If-None-Match: an unchanged notification costs a 304.
- Snapshots and deltas are fetched relative to the URL whose notification is being applied,
  and never beyond their signed size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp

from blocklist.errors import ArtefactError
from blocklist.notification import MAX_NOTIFICATION_SIZE


class FetchError(Exception):
    """The authority (or static host) could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Source(Protocol):
    """Where notifications and files come from (HTTP mirrors, or an in-memory simulator).

    `index` is the mirror whose notification is being applied (files come from it), among
    `mirror_count`; `fallbacks` says why earlier ones were passed over in the last poll."""

    index: int
    fallbacks: list[str]

    @property
    def mirror_count(self) -> int: ...

    @property
    def notification_url(self) -> str: ...

    def is_api(self, url: str) -> bool:
        """True when `url` can long-poll (the authority's API)."""
        ...

    def passed_over(self, reason: str) -> None: ...

    async def notification(self, after: int | None, wait: int, start: int = 0) -> bytes: ...

    async def fetch(self, uri: str, size: int) -> bytes: ...

    async def ack(self, body: dict) -> None: ...

    async def close(self) -> None: ...


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass
class _Cached:
    etag: str
    body: bytes


class HttpSource:
    def __init__(
        self,
        notification_url: str | list[str],
        token: str = "",
        timeout: float = 30,
        authority_url: str = "",
    ) -> None:
        urls = [notification_url] if isinstance(notification_url, str) else list(notification_url)
        if not urls:
            raise ValueError("at least one notification URL is needed")
        self.urls = urls
        self.authority_url = authority_url.rstrip("/")
        self._api_origin = origin(self.authority_url) if self.authority_url else None
        self.timeout = timeout
        self._token = token
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, _Cached] = {}
        self.index = 0  # the mirror whose notification is being applied
        self.fallbacks: list[str] = []  # why earlier mirrors were passed over in the last poll
        self.not_modified = 0  # 304 answers received

    @property
    def mirror_count(self) -> int:
        return len(self.urls)

    @property
    def notification_url(self) -> str:
        return self.urls[self.index]

    def is_api(self, url: str) -> bool:
        return self._api_origin is not None and origin(url) == self._api_origin

    def _auth(self, url: str) -> dict[str, str]:
        if not self._token or not self.is_api(url):
            return {}
        return {"Authorization": f"Bearer {self._token}"}

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(
        self, url: str, limit: int, timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        session = await self._client()
        auth = self._auth(url)
        try:
            async with session.get(
                url,
                headers={**auth, **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout),
                # A redirect could carry the token to another host: follow none when it is set.
                allow_redirects=not auth,
            ) as resp:
                if resp.status == 304:
                    return 304, b"", resp.headers.get("ETag", "")
                if resp.status != 200:
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    raise FetchError(f"{url} answered {resp.status}: {text.strip()}", resp.status)
                if resp.content_length is not None and resp.content_length > limit:
                    raise ArtefactError(
                        "oversized",
                        f"{url} is {resp.content_length} bytes; at most {limit} expected",
                    )
                # Never read more than the signed size (+1 to notice an oversized answer).
                data = await resp.content.read(limit + 1)
                while len(data) <= limit:
                    more = await resp.content.read(limit + 1 - len(data))
                    if not more:
                        break
                    data += more
                if len(data) > limit:
                    raise ArtefactError(
                        "oversized", f"{url} sent more than the {limit} bytes expected"
                    )
                return 200, data, resp.headers.get("ETag", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"cannot fetch {url}: {exc.__class__.__name__}: {exc}") from None

    async def _notification_from(self, url: str, after: int | None, wait: int) -> bytes:
        api = self.is_api(url)
        if api and after is not None and wait > 0:
            sep = "&" if "?" in url else "?"
            target = f"{url}{sep}after={after}&wait={wait}"
        else:
            target, wait = url, 0  # static hosts get a plain, cacheable GET
        cached = self._cache.get(url)
        headers = {"If-None-Match": cached.etag} if cached and cached.etag else {}
        status, data, etag = await self._get(
            target, MAX_NOTIFICATION_SIZE, self.timeout + wait, headers
        )
        if status == 304:
            if cached is None:
                raise FetchError(f"{url} answered 304 to an unconditional request", 304)
            self.not_modified += 1
            return cached.body
        if etag:
            self._cache[url] = _Cached(etag, data)
        else:
            self._cache.pop(url, None)
        return data

    async def notification(self, after: int | None, wait: int, start: int = 0) -> bytes:
        """The notification from the first mirror at or after `start` that answers."""
        if start == 0:
            self.fallbacks = []
        errors: list[Exception] = []
        for index in range(start, len(self.urls)):
            url = self.urls[index]
            try:
                data = await self._notification_from(url, after, wait)
            except (FetchError, ArtefactError) as exc:
                errors.append(exc)
                if index + 1 < len(self.urls):
                    self.fallbacks.append(f"{url}: {exc}")
                continue
            self.index = index
            return data
        if len(errors) == 1:
            raise errors[0]
        raise FetchError(
            "every mirror failed: " + "; ".join(str(e) for e in errors),
            getattr(errors[-1], "status", None) if errors else None,
        )

    def passed_over(self, reason: str) -> None:
        """Record that the notification of the current mirror was refused."""
        self.fallbacks.append(f"{self.notification_url}: {reason}")

    async def fetch(self, uri: str, size: int) -> bytes:
        return (await self._get(urljoin(self.notification_url, uri), size, self.timeout))[1]

    async def ack(self, body: dict) -> None:
        session = await self._client()
        url = f"{self.authority_url}/v1/acks"
        try:
            async with session.post(
                url,
                json=body,
                headers=self._auth(url),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    raise FetchError(f"ack to {url} answered {resp.status}: {text}", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"cannot send ack to {url}: {exc}") from None
