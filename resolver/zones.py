"""Per-zone forwarding: which upstreams a query goes to (`upstream.zones`, longest match).

A query for a name in a configured zone (the zone itself or any name below it) is forwarded to
that zone's servers; when several zones contain it, the longest one wins; any other query goes
to `upstream.servers`. Each zone has its own `Upstreams` (order, failover, health), so a dead
internal resolver never slows the default path. Only forwarding is routed here: a listed name
is blocked before any forwarding, in whatever zone it is.
"""

from __future__ import annotations

from resolver.config import UpstreamSection
from resolver.stats import Stats
from resolver.upstream import Upstreams


class ZoneRouter:
    __slots__ = ("default", "zones")

    def __init__(self, config: UpstreamSection, stats: Stats) -> None:
        self.default = Upstreams(config, stats)
        self.zones: dict[bytes, Upstreams] = {
            zone.encode(): Upstreams(config.model_copy(update={"servers": servers}), stats)
            for zone, servers in config.zones.items()
        }

    def select(self, qname: bytes) -> Upstreams:
        """The upstreams for the lowercase dotted `qname`: the longest zone holding it."""
        zones = self.zones
        if not zones:
            return self.default
        name = qname
        while True:
            found = zones.get(name)
            if found is not None:
                return found
            dot = name.find(b".")
            if dot < 0:
                return self.default
            name = name[dot + 1 :]

    def zone_of(self, qname: bytes) -> str | None:
        """The zone `qname` is forwarded by, None for the default servers (for `resolver check`)."""
        chosen = self.select(qname)
        for zone, ups in self.zones.items():
            if ups is chosen:
                return zone.decode()
        return None
