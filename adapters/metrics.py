"""Prometheus metrics and the health of an intermediate server, on a loopback HTTP listener.

The node's ``metrics`` job (every 5 seconds of its clock, middleware/jobs.py) reads its
figures from the database on its pool, never while a scrape waits on the reactor, and sets
every gauge: queries by state, provisions by status (a state without rows is 0, never the
last value seen), held provisions waiting for a decision, the outbox backlog and the
permitted-query list in force. A refresh that fails fails the job: the job's metrics and the
health (``JobFailing``) show it. The jobs' own metrics (`JobMetrics`: last success, last
duration, failures) follow every run. The same listener answers ``/health`` (what is failing,
middleware/health.py), ``/health/live`` and ``/health/ready``.
"""

from __future__ import annotations

import json
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from adapters.listening import Listener
from middleware.deferred import deferred
from middleware.health import Health
from middleware.jobs import FAILED, JobRun, JobState, Scheduler
from middleware.node import IntermediateServer
from middleware.queries import PROVISION_STATUSES, STATES

__all__ = ["JOB", "HealthResource", "JobMetrics", "NodeMetrics", "metrics_listener"]

JOB = "metrics"  # the name of the job that refreshes the gauges


class JobMetrics:
    """The metrics of a party's jobs, in ``registry``, labelled ``institution`` (a code, or
    ``hub``) and ``job``: when each last succeeded, how long its last run took, how many of
    its runs failed (since the party started) and whether its last run failed."""

    def __init__(self, registry: CollectorRegistry, jobs: Scheduler, institution: str) -> None:
        self._jobs = jobs
        self._institution = institution
        labels = ["institution", "job"]
        self.last_success = Gauge(
            "renkei_job_last_success_timestamp_seconds",
            "When the job's last successful run ended",
            labels,
            registry=registry,
        )
        self.last_duration = Gauge(
            "renkei_job_last_duration_seconds",
            "How long the job's last run took",
            labels,
            registry=registry,
        )
        self.failures = Counter(
            "renkei_job_failures", "Failed runs of the job", labels, registry=registry
        )
        self.failing = Gauge(
            "renkei_job_failing",
            "1 when the job's last run failed, else 0",
            labels,
            registry=registry,
        )

    def start(self) -> None:
        """Show every job known now (with the failures it has had), then follow their
        runs."""
        for state in self._jobs.states():
            self._show(state, None)
            self.failures.labels(self._institution, state.name).inc(state.failures_total)
        self._jobs.watch(self._show)

    def stop(self) -> None:
        self._jobs.unwatch(self._show)

    def _show(self, state: JobState, run: JobRun | None) -> None:
        labels = {"institution": self._institution, "job": state.name}
        failures = self.failures.labels(**labels)  # a job that never failed shows 0
        self.failing.labels(**labels).set(1 if state.failures else 0)
        if state.last_success_at is not None:
            self.last_success.labels(**labels).set(state.last_success_at.timestamp())
        if run is None:
            return
        if run.duration is not None:
            self.last_duration.labels(**labels).set(run.duration)
        if run.outcome == FAILED:
            failures.inc()


class NodeMetrics(Service):
    """The metrics of one node: its gauges, refreshed by its ``metrics`` job while this
    service runs, and its jobs' metrics; `metrics_listener` serves them."""

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
            "Version of the permitted-query list in force (0: none received)",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self.list_expires = Gauge(
            "renkei_permitted_list_expires_timestamp_seconds",
            "When the permitted-query list in force expires (0: none received)",
            ["institution"],
            registry=self.registry,
        ).labels(**labels)
        self.jobs = JobMetrics(self.registry, node.jobs, node.code)
        # The labels each labelled gauge has shown: one that has no rows any more shows 0.
        self._shown: dict[str, set[str]] = {"queries": set(), "provisions": set()}

    @deferred
    async def refresh(self) -> None:
        """Read the figures from the database and set every gauge (the ``metrics`` job);
        a failure is raised, for the job to record and the health to show."""
        figures = await self.node.store.statistics.gauges()
        self._set_all(self.queries, "state", "queries", STATES, figures["queries"])
        self._set_all(
            self.provisions, "status", "provisions", PROVISION_STATUSES, figures["provisions"]
        )
        self.held.set(figures["held"])
        self.backlog.set(figures["backlog"])
        permitted = self.node.lists.current
        self.list_version.set(permitted.version if permitted is not None else 0)
        self.list_expires.set(permitted.expires_at.timestamp() if permitted is not None else 0)

    def _set_all(
        self,
        gauge: Gauge,
        label: str,
        shown: str,
        known: tuple[str, ...],
        counts: dict[str, int],
    ) -> None:
        """Set the gauge of every known value of ``label``, of every value shown before
        and of every value found: what has no rows now is 0."""
        values = set(known) | self._shown[shown] | set(counts)
        for value in values:
            gauge.labels(**{"institution": self.node.code, label: value}).set(counts.get(value, 0))
        self._shown[shown] = values

    def startService(self) -> None:
        super().startService()
        self.jobs.start()
        self.node.jobs.add(JOB, self._interval, self.refresh)

    def stopService(self) -> Any:
        super().stopService()
        self.jobs.stop()
        return self.node.jobs.remove(JOB)

    def resource(self) -> Resource:
        """What its listener serves: ``/metrics``, rendered from the registry, and
        ``/health`` (`HealthResource`)."""
        root = Resource()
        # A WSGI resource (it renders the registry on the reactor's thread pool).
        root.putChild(b"metrics", cast(IResource, MetricsResource(registry=self.registry)))
        root.putChild(b"health", cast(IResource, HealthResource(self.node.health)))
        return root


class HealthResource(Resource):
    """``GET /health`` of a party: its health's report (JSON), 200 when ready, else 503;
    ``/health/live`` and ``/health/ready`` the same JSON, 200 when live (ready), else 503
    (a node's here, the hub's in simulators/network/health.py)."""

    def __init__(self, health: Health, probe: str | None = None) -> None:
        super().__init__()
        self._health = health
        self._probe = probe or "ready"
        if probe is None:  # /health itself
            self.putChild(b"live", cast(IResource, HealthResource(health, "live")))
            self.putChild(b"ready", cast(IResource, HealthResource(health, "ready")))

    def render_GET(self, request: Request) -> bytes:
        report = self._health.report()
        request.setResponseCode(200 if report[self._probe] else 503)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(report, ensure_ascii=False).encode("utf-8")


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
