"""Local exemptions: names an ASP keeps resolving (its own services) whatever the list says.

An exempted name E overrides the entries that would block E: an entry on E itself or on any
name above it. Such an entry keeps blocking everything else; only E and the names below E are
answered as not listed. An entry on a name strictly below E still blocks (the authority listed
something under the ASP's name on purpose, and an exemption must not hide it). A new list that
lists an exempted name is therefore applied without that name, not held whole as a protected
name is, and every exemption that overrides an entry is reported in the ack
(`report`), so the authority's compliance view shows it.

The matcher returns the entry of the longest listed suffix, so "an entry at E or above matched a
name at or below E" is the whole test: when that entry is one of the entries on E or above E,
no entry strictly below E matched. `ExemptingMatcher` wraps any matcher (the Python `Matcher`
or the C `ListIndex`) with that test; the C fast path is given the same entry ids (`entry_ids`)
and hands every query it would block by one of them to Python, which decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from blocklist.digests import query_digests
from blocklist.domains import canonical_domain
from blocklist.state import Kind, ListState

# What an ack may carry about exemptions: the authority stores at most 4000 characters of an
# ack's status, so the report is bounded well below that (the totals are always there).
REPORT_BUDGET = 2000


@dataclass(frozen=True)
class Exemption:
    name: bytes  # canonical, dotted, lowercase
    entries: tuple[int, ...]  # ids of the entries on `name` or above it, in the list in force


class Exemptions:
    """The exemptions against one list state (rebuilt with each list)."""

    __slots__ = ("by_entry", "items")

    def __init__(self, names: list[str], state: ListState) -> None:
        items = []
        for text in names:
            name = canonical_domain(text).encode()
            ids = []
            for digest in query_digests(name):
                i = state.index_of(digest)
                if i >= 0 and state.kinds[i] == Kind.DOMAIN:
                    ids.append(state.entry(i).entry_id)
            items.append(Exemption(name, tuple(ids)))
        self.items = tuple(items)
        by_entry: dict[int, list[bytes]] = {}
        for item in self.items:
            for entry_id in item.entries:
                by_entry.setdefault(entry_id, []).append(item.name)
        self.by_entry = {k: tuple(v) for k, v in by_entry.items()}

    @classmethod
    def empty(cls) -> Exemptions:
        return cls([], ListState.empty())

    @property
    def entry_ids(self) -> tuple[int, ...]:
        """Entries the C path must hand to Python instead of blocking."""
        return tuple(self.by_entry)

    def exempts(self, name: bytes, entry_id: int) -> bytes | None:
        """The exempted name that lifts `entry_id`'s block on `name`, or None."""
        for exempt in self.by_entry.get(entry_id, ()):
            if name == exempt or name.endswith(b"." + exempt):
                return exempt
        return None

    def report(self) -> dict:
        """For the ack: every exemption that overrides an entry of the list in force."""
        active = [i for i in self.items if i.entries]
        shown, used = [], 0
        for item in active:
            one = {"name": item.name.decode(), "entries": list(item.entries[:8])}
            used += len(json.dumps(one)) + 2
            if used > REPORT_BUDGET:
                break
            shown.append(one)
        return {
            "exempted": shown,
            "exempted_total": len(active),
            "exempt_names": len(self.items),
        }


class ExemptingMatcher:
    """A matcher (`match`, `match_any`, `len`, `domains`) that never blocks an exempted name."""

    __slots__ = ("exemptions", "inner")

    def __init__(self, inner, exemptions: Exemptions) -> None:
        self.inner = inner
        self.exemptions = exemptions

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def domains(self) -> int:
        return self.inner.domains

    def match(self, name: bytes) -> int:
        entry_id = self.inner.match(name)
        if entry_id >= 0 and self.exemptions.exempts(name, entry_id) is not None:
            return -1
        return entry_id

    def match_any(self, names: tuple[bytes, ...] | list[bytes]) -> int:
        for name in names:
            entry_id = self.match(name)
            if entry_id >= 0:
                return entry_id
        return -1
