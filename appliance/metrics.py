"""Fleet monitoring: a Prometheus endpoint read from the same status the CLI shows.

Values are computed at scrape time from `status()` (no second bookkeeping); no
patient data and no UIDs are exported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from appliance.health import ATTENTION, FAULT, HOLDING, OK, SENDING

HEALTH_STATES = (OK, SENDING, HOLDING, ATTENTION, FAULT)


class BoxCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        queue = status["queue"]
        yield _gauge("fluxbox_queue_studies", "Studies not yet complete", queue["studies"])
        yield _gauge("fluxbox_queue_instances", "Instances waiting for delivery",
                     queue["instances"])
        yield _gauge("fluxbox_queue_bytes", "Bytes of studies not yet complete", queue["bytes"])
        yield _gauge("fluxbox_disk_free_bytes", "Free space on the data partition",
                     status["disk"]["free_bytes"])
        health = GaugeMetricFamily("fluxbox_health", "1 for the current health state",
                                   labels=["state"])
        for state in HEALTH_STATES:
            health.add_metric([state], 1.0 if status["health"] == state else 0.0)
        yield health
        site = GaugeMetricFamily("fluxbox_site", "The current site (1), with its source",
                                 labels=["site", "source"])
        site.add_metric([status["site"]["id"] or "unknown", status["site"]["source"] or ""], 1)
        yield site
        link = GaugeMetricFamily("fluxbox_link", "The link class in use (1)", labels=["class"])
        link.add_metric([status["link"]["class"]], 1)
        yield link
        sent = CounterMetricFamily("fluxbox_sent_bytes", "Bytes delivered per link class, "
                                   "this month", labels=["link_class"])
        for link_class, month_bytes in status.get("sent_bytes_month", {}).items():
            sent.add_metric([link_class], month_bytes)
        yield sent
        latency = GaugeMetricFamily("fluxbox_delivery_latency_seconds",
                                    "Median time from arrival to complete, recent studies")
        latency.add_metric([], status.get("delivery_latency_s") or 0.0)
        yield latency
        held = GaugeMetricFamily("fluxbox_held_studies", "Held studies by reason",
                                 labels=["reason"])
        for reason, count in status.get("held", {}).get("reasons", {}).items():
            held.add_metric([reason], count)
        yield held


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(name, doc)
    metric.add_metric([], value)
    return metric


def serve(status: Callable[[], dict[str, Any]], address: str, port: int) -> WSGIServer:
    """Start the endpoint on its own thread; returns the server (call .shutdown() to stop)."""
    registry = CollectorRegistry()
    registry.register(BoxCollector(status))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server
