"""Readiness and outbox-relay health: one rule for every service.

Readiness means "this replica can serve requests", which is: its database answers. The broker
is deliberately not part of it. While RabbitMQ (or the sidecar's pub/sub) is away, the outbox
keeps every event and the relay retries; failing `/readyz` for that would take every replica
out of its Service at once and turn a broker blip into an API outage (and, with post-install
migrations, deadlock `helm install --wait`). Relay health is reported instead as Prometheus
metrics and as a log line when the relay pauses and when it resumes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billing_common.db import ping
from billing_common.outbox import OutboxRelay
from billing_common.web import ReadinessCheck


def readiness_checks(app: FastAPI) -> Sequence[ReadinessCheck]:
    """What `/readyz` checks in every service (pass as `readiness_checks=`)."""

    async def database() -> None:
        await ping(app.state.ctx.engine)

    return [database]


class RelayMetrics(Collector):
    """Reads the relay's state at scrape time, so the numbers are never stale copies:

    - billing_outbox_pending: unpublished outbox rows, as last counted by the relay (exact
      whenever the relay drained the outbox or failed to publish);
    - billing_outbox_relay_up: 1 while the relay publishes, 0 while it is paused on failures;
    - billing_outbox_relay_last_success_timestamp_seconds: when a relay pass last completed
      (alert on `time() - this` growing while pending > 0).
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.relay: OutboxRelay | None = None

    def collect(self) -> Iterator[Metric]:
        relay = self.relay
        if relay is None:
            return
        pending = GaugeMetricFamily(
            "billing_outbox_pending", "Unpublished outbox rows", labels=["service"]
        )
        pending.add_metric([self.service], float(relay.pending))
        up = GaugeMetricFamily(
            "billing_outbox_relay_up",
            "1 while the outbox relay publishes, 0 while it is paused on failures",
            labels=["service"],
        )
        up.add_metric([self.service], 1.0 if relay.healthy else 0.0)
        yield pending
        yield up
        if relay.last_success_at is not None:
            last = GaugeMetricFamily(
                "billing_outbox_relay_last_success_timestamp_seconds",
                "Unix time of the outbox relay's last successful pass",
                labels=["service"],
            )
            last.add_metric([self.service], relay.last_success_at)
            yield last


def install_relay_metrics(metrics: Any, relay: OutboxRelay) -> None:
    """Expose `relay` on the service's registry (`ServiceMetrics`); once per registry, the
    relay swapped in on every lifespan."""
    collector = getattr(metrics, "relay_collector", None)
    if not isinstance(collector, RelayMetrics):
        collector = RelayMetrics(metrics.service)
        metrics.registry.register(collector)
        metrics.relay_collector = collector
    collector.relay = relay
