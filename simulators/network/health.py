"""The hub's health endpoint and the metrics of its jobs.

`health_listener` serves, on ``[network] health_listen`` (plain HTTP, loopback), ``GET
/health`` (the hub's health, middleware/health.py: 200 when ready, 503 with what is failing;
``/health/live``, ``/health/ready``), the same JSON as a node's on its metrics listener
(adapters/metrics.py), and ``GET /metrics``: the metrics of the hub's jobs (`HubMetrics`,
labelled ``institution="hub"``).
"""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.web.resource import IResource, Resource

from adapters.listening import Listener
from adapters.metrics import HealthResource, JobMetrics
from middleware.network import HUB
from simulators.network.hub import Hub

__all__ = ["HubMetrics", "health_listener"]


class HubMetrics(Service):
    """The metrics of the hub's jobs, following their runs while this service runs."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry()
        self.jobs = JobMetrics(self.registry, hub.jobs, HUB)

    def startService(self) -> None:
        super().startService()
        self.jobs.start()

    def stopService(self) -> None:
        super().stopService()
        self.jobs.stop()


def health_listener(metrics: HubMetrics, description: str, reactor: Any) -> Listener:
    """The listener of the hub's ``/health`` and ``/metrics`` (``[network] health_listen``,
    GET only)."""
    root = Resource()
    root.putChild(b"health", cast(IResource, HealthResource(metrics.hub.health)))
    root.putChild(b"metrics", cast(IResource, MetricsResource(registry=metrics.registry)))
    return Listener(reactor, description, root, max_body=0)
