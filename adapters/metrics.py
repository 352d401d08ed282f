"""Prometheus metrics of an intermediate server, on a loopback HTTP listener.

Gauges are refreshed from the node's database on its pool every few seconds, never while a
scrape waits on the reactor: queries by state, provisions by status, held provisions
waiting for a decision, the outbox backlog and the permitted-query list in force.
"""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.web.resource import IResource, Resource

from adapters.listening import Listener
from middleware.clock import periodic
from middleware.deferred import deferred
from middleware.node import IntermediateServer

__all__ = ["NodeMetrics", "metrics_listener"]


class NodeMetrics(Service):
    """The metrics of one node: its gauges, refreshed while it runs; `metrics_listener`
    serves them."""

    def __init__(self, node: IntermediateServer, interval: float = 5.0) -> None:
        self.node = node
        self._interval = interval
        self.registry = CollectorRegistry()
        labels = {"institution": node.code}
        self.queries = Gauge(
            "renkei_queries",
            "Queries sent, by state",
            ["institution", "state"],
            registry=self.registry,
        )
        self.provisions = Gauge(
            "renkei_provisions",
            "Provision requests answered, by status",
            ["institution", "status"],
            registry=self.registry,
        )
        self.held = Gauge(
            "renkei_held_waiting",
            "Held provisions waiting for a staff decision",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self.backlog = Gauge(
            "renkei_outbox_backlog",
            "Messages waiting in the outbox",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self.list_version = Gauge(
            "renkei_permitted_list_version",
            "Version of the permitted-query list in force",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self.list_expires = Gauge(
            "renkei_permitted_list_expires_timestamp_seconds",
            "When the permitted-query list in force expires",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self._loop: LoopingCall | None = None

    @deferred
    async def refresh(self) -> None:
        """Read the figures from the database and set the gauges."""
        figures = await self.node.store.statistics.gauges()
        for state, count in figures["queries"].items():
            self.queries.labels(institution=self.node.code, state=state).set(count)
        for status, count in figures["provisions"].items():
            self.provisions.labels(institution=self.node.code, status=status).set(count)
        self.held.set(figures["held"])
        self.backlog.set(figures["backlog"])
        permitted = self.node.lists.current
        if permitted is not None:
            self.list_version.set(permitted.version)
            self.list_expires.set(permitted.expires_at.timestamp())

    def startService(self) -> None:
        super().startService()
        self._loop = periodic(self.refresh, self.node.clock)
        self._loop.start(self._interval, now=True).addErrback(
            lambda failure: None  # the node is stopping: its database refuses work
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def resource(self) -> Resource:
        """What its listener serves: ``/metrics``, rendered from the registry."""
        root = Resource()
        # A WSGI resource (it renders the registry on the reactor's thread pool).
        root.putChild(b"metrics", cast(IResource, MetricsResource(registry=self.registry)))
        return root


def metrics_listener(metrics: NodeMetrics, reactor: Any) -> Listener:
    """The listener of a node's metrics (``metrics_listen``, plain HTTP on loopback for a
    Prometheus scraper): GET only, so no body is accepted."""
    description = metrics.node.institution.metrics_listen
    assert description is not None
    return Listener(reactor, description, metrics.resource(), max_body=0)
