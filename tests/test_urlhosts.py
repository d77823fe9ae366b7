"""URLHOST entries: published by the authority for every host that carries an active URL entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from authority_fixtures import RunningAuthority, start_authority

from blocklist.digests import digest
from blocklist.entries import parse_kind
from blocklist.errors import InvalidEntry
from blocklist.state import Kind, ListState
from blocklist.urlhosts import URLHOST_ID_BASE


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


async def _add(api: RunningAuthority, value: str) -> int:
    status, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": value, "hosting_country": "NL", "evidence": "c"}
    )
    assert status == 201, body
    status, body2 = await api.call("bob", "POST", f"/v1/entries/{body['id']}/approve")
    assert status == 200, body2
    return body["id"]


async def _published(api: RunningAuthority) -> ListState:
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200, body
    return api.authority.publisher.state


def _urlhosts(state: ListState) -> dict[str, int]:
    return {e.value: e.entry_id for e in state if e.kind is Kind.URLHOST}  # type: ignore[misc]


async def test_urlhost_follows_url_entries(api: RunningAuthority) -> None:
    first = await _add(api, "http://shared.example/album/1/")
    second = await _add(api, "http://Shared.example/album/2/")
    await _add(api, "blocked-one.example")
    state = await _published(api)
    assert _urlhosts(state) == {"shared.example": URLHOST_ID_BASE + min(first, second)}
    i = state.index_of(digest("shared.example"))
    assert state.kinds[i] == Kind.URLHOST
    # The hashed edition carries it too: digest, id and kind, no value.
    assert digest("shared.example") in state.hashed()

    # Delisting the lower-id entry moves the URLHOST id; delisting both removes it.
    await _delist(api, first)
    assert _urlhosts(await _published(api)) == {"shared.example": URLHOST_ID_BASE + second}
    await _delist(api, second)
    assert _urlhosts(await _published(api)) == {}


async def _delist(api: RunningAuthority, entry: int) -> None:
    """Two people: an officer asks, an independent approver confirms."""
    status, _ = await api.call("alice", "POST", f"/v1/entries/{entry}/delist", {"reason": "gone"})
    assert status == 202
    status, _ = await api.call("carol", "POST", f"/v1/entries/{entry}/delist/confirm")
    assert status == 200


async def test_domain_entry_replaces_urlhost(api: RunningAuthority) -> None:
    await _add(api, "http://www.shared.example/a/")
    assert set(_urlhosts(await _published(api))) == {"www.shared.example"}
    # A domain entry above the host blocks it whole: no URLHOST, no digest collision.
    domain = await _add(api, "shared.example")
    state = await _published(api)
    assert _urlhosts(state) == {}
    await _delist(api, domain)
    assert set(_urlhosts(await _published(api))) == {"www.shared.example"}
    # The same host as a domain entry: the domain entry takes the digest.
    await _add(api, "www.shared.example")
    state = await _published(api)
    i = state.index_of(digest("www.shared.example"))
    assert state.kinds[i] == Kind.DOMAIN and _urlhosts(state) == {}


async def test_nothing_new_when_urlhosts_unchanged(api: RunningAuthority) -> None:
    await _add(api, "http://shared.example/a/")
    await _published(api)
    status, body = await api.call("alice", "POST", "/v1/publish")
    assert status == 200 and body == {"serial": 1, "changed": False, "entries": 2}, body


async def test_urlhost_kind_cannot_be_typed_in(api: RunningAuthority) -> None:
    with pytest.raises(InvalidEntry, match="unknown entry kind"):
        parse_kind("urlhost")
    status, body = await api.call(
        "alice",
        "POST",
        "/v1/entries",
        {"value": "shared.example", "kind": "urlhost", "hosting_country": "NL", "evidence": "c"},
    )
    assert status in (400, 422), body
