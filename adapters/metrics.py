"""Prometheus metrics of an intermediate server, on a loopback HTTP listener.

Gauges are refreshed from the node's database on its pool every few seconds, never while a
scrape waits on the reactor: queries by state, provisions by status, held provisions
waiting for a decision, the outbox backlog and the permitted-query list in force. The same
listener answers ``/health``: whether the node is ready and, if not, what is failing (no
list in force, the database failing, an outbox message stuck for a minute).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from adapters.listening import Listener
from middleware.clock import periodic
from middleware.deferred import deferred
from middleware.node import IntermediateServer

__all__ = ["STUCK", "HealthResource", "NodeMetrics", "health_failures", "metrics_listener"]

# Seconds an outbox message may wait before the health check calls it stuck.
STUCK = 60.0


class NodeMetrics(Service):
    """The metrics of one node: its gauges, refreshed while it runs; `metrics_listener`
    serves them."""

    log = Logger()

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
        # What the health check reads: the last refresh, its failure, the oldest pending.
        self.refreshed_at: float | None = None
        self.refresh_error: str | None = None
        self.oldest_pending: datetime | None = None

    @deferred
    async def refresh(self) -> None:
        """Read the figures from the database and set the gauges; a failure is logged and
        shown by the health check, and the next refresh tries again."""
        try:
            figures = await self.node.store.statistics.gauges()
        except Exception as failure:
            if self.refresh_error is None:
                self.log.failure("metrics of {code} not refreshed", code=self.node.code)
            self.refresh_error = f"{type(failure).__name__}: {failure}"[:200]
            return
        self.refresh_error = None
        self.refreshed_at = self.node.clock.seconds()
        self.oldest_pending = figures["oldest_pending"]
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

    def health(self) -> dict[str, Any]:
        """Whether the node is ready, and what is failing (from the last refresh)."""
        node = self.node
        now = node.now()
        failing = health_failures(
            now,
            node.lists.current,
            "no permitted-query list received from the hub",
            self.refresh_error,
            self.refreshed_at,
            self.oldest_pending,
        )
        return {
            "party": node.institution.name,
            "code": node.code,
            "ready": bool(node.running) and not failing,
            "failing": failing,
            "checked_at": now.isoformat(),
        }

    def resource(self) -> Resource:
        """What its listener serves: ``/metrics``, rendered from the registry, and
        ``/health`` (JSON; 200 when ready, 503 with what is failing)."""
        root = Resource()
        # A WSGI resource (it renders the registry on the reactor's thread pool).
        root.putChild(b"metrics", cast(IResource, MetricsResource(registry=self.registry)))
        root.putChild(b"health", cast(IResource, HealthResource(self.health)))
        return root


def health_failures(
    now: datetime,
    permitted: Any,
    missing: str,
    error: str | None,
    checked_at: float | None,
    oldest_pending: datetime | None,
) -> list[str]:
    """What a party's health check finds failing: no permitted-query list (``missing``) or
    an expired one, the database's ``error`` (or no check yet), an outbox message waiting
    for more than `STUCK` seconds."""
    failing = []
    if permitted is None:
        failing.append(missing)
    elif permitted.expires_at <= now:
        failing.append(f"the permitted-query list expired at {permitted.expires_at.isoformat()}")
    if error is not None:
        failing.append(f"database: {error}")
    elif checked_at is None:
        failing.append("not checked yet")
    if oldest_pending is not None:
        waiting = (now - oldest_pending).total_seconds()
        if waiting > STUCK:
            failing.append(f"outbox: a message waiting for {waiting:.0f} s")
    return failing


class HealthResource(Resource):
    """``GET /health`` of a party: the JSON ``health()`` gives, 200 when it says ready, else
    503 (a node's here, the hub's in simulators/network/health.py)."""

    isLeaf = True

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self._health = health

    def render_GET(self, request: Request) -> bytes:
        health = self._health()
        request.setResponseCode(200 if health["ready"] else 503)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(health, ensure_ascii=False).encode("utf-8")


def metrics_listener(metrics: NodeMetrics, reactor: Any) -> Listener:
    """The listener of a node's metrics (``metrics_listen``, plain HTTP on loopback for a
    Prometheus scraper): GET only, so no body is accepted."""
    description = metrics.node.institution.metrics_listen
    assert description is not None
    return Listener(
        reactor,
        description,
        metrics.resource(),
        max_body=0,
        shared=metrics.node.institution.processes > 1,
    )
