"""Safety rails an ASP applies before a new verified list replaces the one in force.

A signed list can still be wrong: an operator error at the authority (Denmark 2012, Orange
2016) is correctly signed. The rails hold such an update — the previous list stays in force, an
alarm is raised — instead of sending an ASP's customers away from major sites.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocklist.digests import DIGEST_SIZE, query_digests
from blocklist.domains import canonical_domain
from blocklist.state import Kind, ListState
from blocklist.sync.config import RailsSection


@dataclass(frozen=True)
class Hold:
    reason: str  # "protected_name" | "growth" | "shrink" | "additions" | "removals"
    message: str


def churn(old: ListState, new: ListState) -> tuple[int, int]:
    """(entries added, entries removed) from `old` to `new`, by digest. Used when the update
    came as a snapshot; a delta chain gives the counts for free."""
    size = DIGEST_SIZE
    before = {old.digests[i : i + size] for i in range(0, len(old.digests), size)}
    nd = new.digests
    added = sum(1 for i in range(0, len(nd), size) if nd[i : i + size] not in before)
    return added, len(old) - (len(new) - added)


class Rails:
    def __init__(self, config: RailsSection) -> None:
        self.config = config
        # For each protected name, the digests of the name and every name above it: a domain
        # entry on any of them would block the protected name.
        self._protected = [
            (name, query_digests(name))
            for name in (canonical_domain(n) for n in config.protected_names)
        ]

    def check(
        self,
        old: ListState | None,
        new: ListState,
        bulk_change: bool,
        counts: tuple[int, int] | None = None,
    ) -> Hold | None:
        """A hold, or None. `counts` (added, removed) when the caller knows them (deltas)."""
        for name, digests in self._protected:
            for d in digests:
                i = new.index_of(d)
                if i >= 0 and new.kinds[i] == Kind.DOMAIN:
                    return Hold(
                        "protected_name",
                        f"the update would block the protected name {name!r} (entry "
                        f"{new.entry(i).entry_id})",
                    )
        if old is None or bulk_change:
            return None
        held = self._churn(old, new, counts)
        if held is not None:
            return held
        before, after = len(old), len(new)
        change = after - before
        if abs(change) <= self.config.min_change:
            return None
        if change > 0 and change > self.config.max_growth * before:
            return Hold(
                "growth",
                f"the update grows the list from {before} to {after} entries, more than "
                f"{self.config.max_growth:.0%}, and is not marked as a bulk change",
            )
        if change < 0 and -change > self.config.max_shrink * before:
            return Hold(
                "shrink",
                f"the update shrinks the list from {before} to {after} entries, more than "
                f"{self.config.max_shrink:.0%}, and is not marked as a bulk change",
            )
        return None

    def _churn(self, old: ListState, new: ListState, counts: tuple[int, int] | None) -> Hold | None:
        c = self.config
        added, removed = counts if counts is not None else churn(old, new)
        before = len(old)
        for reason, count, limit, share in (
            ("additions", added, c.max_added, c.max_added_share),
            ("removals", removed, c.max_removed, c.max_removed_share),
        ):
            verb = "adds" if reason == "additions" else "removes"
            if count > limit:
                return Hold(
                    reason,
                    f"the update {verb} {count} entries, more than the {limit} allowed at once "
                    f"({added} added, {removed} removed), and is not marked as a bulk change",
                )
            if count > c.min_churn and count > share * before:
                return Hold(
                    reason,
                    f"the update {verb} {count} of {before} entries, more than {share:.0%} "
                    f"({added} added, {removed} removed), and is not marked as a bulk change",
                )
        return None
