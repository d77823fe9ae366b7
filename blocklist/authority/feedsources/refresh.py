"""One refresh of one feed: fetch, verify, parse, apply — or refuse and keep the last state.

A refused update (bad signature, wrong certificate, rollback, checksum, size, unreadable file)
changes nothing but the feed's error, failure count and audit log: the entries it brought
stay as they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin

from blocklist.authority.feeds import FeedItem, FeedUpdate
from blocklist.authority.feedsources import cordon, https, signature
from blocklist.authority.feedsources.formats import FeedFormatError, check_sha256, check_size, parse
from blocklist.authority.store import Store

# Runs a blocking store call off the event loop (asyncio.to_thread, or the poller's, which
# lets a shutdown wait for calls in flight before the database closes).
Offload = Callable[..., Awaitable[Any]]


class FeedRefused(Exception):
    """The feed's update was refused; the previous state is kept."""


async def refresh(
    store: Store, name: str, offload: Offload = asyncio.to_thread
) -> FeedUpdate | None:
    """Refresh `name` from its source; None when it had nothing new. Raises FeedRefused."""
    feed = await offload(store.feed_config, name)
    try:
        return await _refresh(store, feed, offload)
    except (
        FeedFormatError,
        https.FetchRefused,
        signature.SignatureRefused,
        cordon.PartnerRefused,
    ) as exc:
        await offload(store.record_feed_failure, name, str(exc))
        raise FeedRefused(f"feed {name}: {exc}") from None


async def _refresh(store: Store, feed: dict, offload: Offload) -> FeedUpdate | None:
    name, trust = feed["name"], feed["trust"]
    if feed["source"] == "file":
        raise FeedFormatError(f"feed {name} is delivered out of band: use `blocklist feed import`")
    if feed["source"] == "cordon":
        got = await cordon.poll(feed["url"], trust, feed["cursor"], store.now())
        if got.items is None:
            await offload(store.record_feed_unchanged, name, got.cursor)
            return None
        return await offload(
            store.apply_feed, name, got.items, cursor=got.cursor, source=f"serial {got.serial}"
        )
    pin = trust.get("cert_sha256", "")
    fetched = await https.fetch(
        feed["url"],
        cert_sha256=pin,
        etag=feed["etag"],
        last_modified=feed["last_modified"],
        limit=int(trust.get("max_bytes", 0)) or https.MAX_FEED_BYTES,
    )
    if fetched.status == 304:
        await offload(store.record_feed_unchanged, name)
        return None
    if trust.get("public_key"):
        sig_url = trust.get("signature_url") or feed["url"] + ".minisig"
        sig = await https.fetch(
            urljoin(feed["url"], sig_url), cert_sha256=pin, limit=signature.MAX_SIGNATURE_BYTES
        )
        signature.verify(fetched.body, sig.body, trust["public_key"])
    return await offload(
        apply_file,
        store,
        name,
        feed["format"],
        fetched.body,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        source=feed["url"],
    )


def apply_file(
    store: Store,
    name: str,
    fmt: str,
    data: bytes,
    *,
    sha256: str = "",
    limit: int = https.MAX_FEED_BYTES,
    etag: str = "",
    last_modified: str = "",
    source: str = "",
) -> FeedUpdate:
    """Parse a verified file and apply it (a worker thread's job for a large file)."""
    check_size(data, limit)
    if sha256:
        check_sha256(data, sha256)
    refused: list[dict] = []
    items: list[FeedItem] = list(parse(data, fmt, refused))
    return store.apply_feed(
        name, items, etag=etag, last_modified=last_modified, source=source, refused=refused
    )
