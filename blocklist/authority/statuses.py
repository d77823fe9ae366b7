"""The statuses an entry moves through (see docs/authority.md for the diagram)."""

ENTRY_STATUSES = ("pending", "active", "removal_pending", "takedown", "rejected", "delisted")
# Statuses that hold the entry's canonical value (one live entry per value).
LIVE_STATUSES = ("pending", "active", "removal_pending", "takedown")
# Statuses whose entries are on the published list.
LISTED_STATUSES = ("active", "removal_pending")
LIVE_SQL = "(" + ", ".join(f"'{s}'" for s in LIVE_STATUSES) + ")"
LISTED_SQL = "(" + ", ".join(f"'{s}'" for s in LISTED_STATUSES) + ")"
# Not a status of its own: a listed entry whose delisting awaits a second officer. It stays
# listed (and published) meanwhile; listing can filter on it.
DELIST_PENDING = "delist_pending"
ENTRY_FILTERS = (*ENTRY_STATUSES, DELIST_PENDING)

__all__ = [
    "DELIST_PENDING",
    "ENTRY_FILTERS",
    "ENTRY_STATUSES",
    "LISTED_SQL",
    "LISTED_STATUSES",
    "LIVE_SQL",
    "LIVE_STATUSES",
]
