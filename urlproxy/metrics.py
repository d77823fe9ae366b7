"""The proxy's Prometheus metrics: counts by route and outcome, never a host, path or address."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

P = "cordon_urlproxy_"


class ProxyMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            P + "http_requests", "Plain HTTP requests by route", ["route"], registry=r
        )
        self.origin_errors = Counter(
            P + "upstream_errors",
            "Failures reaching the origin or the stop page",
            ["target", "kind"],
            registry=r,
        )
        self.tls = Counter(
            P + "tls_connections", "TLS connections by outcome", ["outcome"], registry=r
        )
        self.tls_active = Gauge(P + "tls_splices", "TLS connections being spliced", registry=r)
        self.list_serial = Gauge(P + "list_serial", "Serial of the list in force", registry=r)
        self.urlhosts = Gauge(
            P + "list_urlhosts", "Hosts carrying URL entries in the list in force", registry=r
        )
        for route in ("origin", "stop_page", "refused"):
            self.requests.labels(route)
        for outcome in ("spliced", "refused", "unreachable", "bad_hello"):
            self.tls.labels(outcome)
