"""An in-memory `Source`: the follower and the engine driven with no socket at all.

Tests and simulations put files in `files` (the notification under "notification.bin") and
read back what was asked for in `requests` and what was acknowledged in `acks`.
"""

from __future__ import annotations

from blocklist.sync.http import FetchError

NOTIFICATION = "notification.bin"


class MemorySource:
    mirror_count = 1
    index = 0
    notification_url = "memory:/notification.bin"

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.requests: list[str] = []
        self.acks: list[dict] = []
        self.fallbacks: list[str] = []

    async def notification(self, after: int | None, wait: int, start: int = 0) -> bytes:
        return await self.fetch(NOTIFICATION, 1 << 20)

    async def fetch(self, uri: str, size: int) -> bytes:
        self.requests.append(uri)
        try:
            return self.files[uri][: size + 1]
        except KeyError:
            raise FetchError(f"{uri} is not in the memory source", 404) from None

    def is_api(self, url: str) -> bool:
        return False

    async def ack(self, body: dict) -> None:
        self.acks.append(body)

    def passed_over(self, reason: str) -> None:
        self.fallbacks.append(reason)

    async def close(self) -> None:
        return None
