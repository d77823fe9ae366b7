"""HTTP adapter of the sync client: long-poll the notification, fetch files within their size."""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp

from blocklist.errors import ArtefactError
from blocklist.notification import MAX_NOTIFICATION_SIZE


class FetchError(Exception):
    """The authority (or static host) could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HttpSource:
    def __init__(
        self,
        notification_url: str,
        token: str = "",
        timeout: float = 30,
        authority_url: str = "",
    ) -> None:
        self.notification_url = notification_url
        self.authority_url = authority_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, url: str, limit: int, timeout: float) -> bytes:
        session = await self._client()
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
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
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"cannot fetch {url}: {exc.__class__.__name__}: {exc}") from None

    async def notification(self, after: int | None, wait: int) -> bytes:
        url = self.notification_url
        if after is not None and wait > 0:
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}after={after}&wait={wait}"
        return await self._get(url, MAX_NOTIFICATION_SIZE, self.timeout + wait)

    async def fetch(self, uri: str, size: int) -> bytes:
        return await self._get(urljoin(self.notification_url, uri), size, self.timeout)

    async def ack(self, body: dict) -> None:
        session = await self._client()
        url = f"{self.authority_url}/v1/acks"
        try:
            async with session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    raise FetchError(f"ack to {url} answered {resp.status}: {text}", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"cannot send ack to {url}: {exc}") from None
