"""A partner Cordon authority as a feed: its signed artefacts, verified by the sync engine.

The partner's root key is pinned in the feed's trust; the notification, key set, snapshot and
deltas are checked exactly as an ASP checks them (blocklist/sync/trusted.py): signature, list
id and edition, expiry, rollback and serial jumps against the replay state kept in the feed's
cursor, then sizes and checksums. The ASP-side rails are left wide open here: the authority
applies its own rails to the diff.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from blocklist.authority.feeds import FeedItem
from blocklist.errors import ArtefactError
from blocklist.state import Kind
from blocklist.sync.config import RailsSection
from blocklist.sync.engine import Result, Settings, update
from blocklist.sync.http import FetchError, HttpSource
from blocklist.sync.rails import Rails
from blocklist.sync.replay import ReplayState
from signing import SigningError, parse_public_key

MAX_PARTNER_ENTRIES = 5_000_000
_OPEN_RAILS = Rails(
    RailsSection(
        max_growth=1e9,
        max_shrink=1,
        min_change=10**9,
        max_added=10**9,
        max_removed=10**9,
        max_added_share=1e9,
        max_removed_share=1,
        min_churn=10**9,
    )
)


class PartnerRefused(Exception):
    pass


@dataclass
class PartnerUpdate:
    items: list[FeedItem] | None  # None: nothing newer than the cursor
    cursor: dict
    serial: int


def _replay(cursor: dict) -> ReplayState:
    data = dict(cursor.get("replay") or {})
    return ReplayState(**{**data, "revoked": tuple(data.get("revoked", ()))})


async def poll(url: str, trust: dict, cursor: dict, now: int) -> PartnerUpdate:
    """Fetch and verify the partner's list; its items, or None when unchanged."""
    try:
        roots = [parse_public_key(k) for k in trust.get("roots", [])]
    except (SigningError, ValueError) as exc:
        raise PartnerRefused(f"the pinned root key is unreadable: {exc}") from None
    settings = Settings(
        pinned_roots=roots,
        list_id=trust.get("list_id", "national"),
        edition=trust.get("edition", "hashed"),
        max_entries=MAX_PARTNER_ENTRIES,
        root_threshold=int(trust.get("root_threshold", 1)),
    )
    replay = _replay(cursor)
    source = HttpSource(url, token=trust.get("token", ""), authority_url=trust.get("api", ""))
    try:
        data = await source.notification(None, 0)
        outcome = await update(
            None, data, source.fetch, settings=settings, rails=_OPEN_RAILS, now=now, replay=replay
        )
    except (SigningError, ArtefactError, FetchError) as exc:
        raise PartnerRefused(f"{exc.__class__.__name__}: {exc}") from None
    finally:
        await source.close()
    if outcome.result != Result.APPLIED or outcome.verified is None:
        raise PartnerRefused(f"the partner's update was not applied ({outcome.result.value})")
    verified = outcome.verified
    checksum = verified.checksum.hex()
    new_cursor = {
        "replay": asdict(outcome.replay or replay),
        "checksum": checksum,
        "serial": verified.serial,
    }
    if (verified.serial, verified.notification.session) == (replay.serial, replay.session):
        if cursor.get("checksum") not in (None, checksum):
            raise PartnerRefused(
                f"equivocation: serial {verified.serial} is signed with two different states"
            )
        return PartnerUpdate(None, new_cursor, verified.serial)
    plain = verified.state.plain
    items = [
        FeedItem(
            n,
            str(e.entry_id),
            raw=e.value if plain else None,
            digest=None if plain else e.digest,
            kind=e.kind,
        )
        for n, e in enumerate(verified.state, start=1)
        # URLHOST entries are derived from URL entries at each publication, ours included.
        if e.kind in (Kind.DOMAIN, Kind.URL)
    ]
    return PartnerUpdate(items, new_cursor, verified.serial)
