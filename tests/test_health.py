"""The health of the parties (稼働状態の通知) in a real box: ``/health`` and its probes, each
check, the changes logged one line each and posted to a webhook in Alertmanager's format,
which a real HTTP listener of the test receives. The network's clock is frozen and moved:
the tests run the jobs or move time rather than wait."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest_twisted
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from middleware.clock import iso
from middleware.health import CRITICAL, WARNING
from middleware.outbox import PENDING
from tests.network import CARE_INSURANCE, MEGURO, write_config
from tests.test_flow import ask_tax, count, wait_until


def port_of(listen: str) -> str:
    return listen.split("port=")[1].split(":")[0]


async def get_health(listen: str, path: str = "/health") -> tuple[int, Any]:
    """The status and JSON of a party's health endpoint."""
    import treq

    answer = await treq.get(f"http://127.0.0.1:{port_of(listen)}{path}")
    return answer.code, await answer.json()


def node_health(box: Any) -> str:
    return str(box.config.institution("meguro").metrics_listen)


def hub_health(box: Any) -> str:
    return str(box.config.network.health_listen)


def checks(health: Any) -> dict[str, str]:
    """What a party's health finds failing: each check and its severity."""
    return {problem.check: problem.severity for problem in health.failing}


@implementer(ILogObserver)
class HealthLog:
    """The lines the parties' health logs, as they are written."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "middleware.health.Health":
            self.lines.append(formatEvent(event))

    def __enter__(self) -> HealthLog:
        globalLogPublisher.addObserver(cast(ILogObserver, self))
        return self

    def __exit__(self, *_: Any) -> None:
        globalLogPublisher.removeObserver(cast(ILogObserver, self))


@pytest_twisted.ensureDeferred
async def test_a_node_is_live_and_ready_and_lists_its_jobs(box: Any) -> None:
    """A node with a list in force and a working database answers 200 on /health,
    /health/live and /health/ready, failing nothing, with each of its jobs."""
    for path in ("/health", "/health/live", "/health/ready"):
        code, told = await get_health(node_health(box), path)
        assert code == 200, path
        assert told["live"] and told["ready"] and told["failing"] == []
    assert (told["party"], told["code"]) == ("meguro", MEGURO)
    assert {job["job"] for job in told["jobs"]} == {
        "outbox",
        "list_sync",
        "purge",
        "held_expiry",
        "notice_status",
        "health",
        "metrics",
    }
    code, told = await get_health(hub_health(box))
    assert code == 200 and told["party"] == "hub" and told["ready"]


@pytest_twisted.ensureDeferred
async def test_a_node_says_its_hub_is_unreachable_then_that_its_list_expires(box: Any) -> None:
    """With the hub gone, a node's next list sync fails: HubUnreachable (critical, not
    ready, still live); as the clock nears the list's expiry PermittedListExpiring warns,
    past it PermittedListExpired; each change is logged once, however often it looks."""
    meguro = box.nodes["meguro"]
    box.clock.freeze()
    await box.stop_party("hub")
    with HealthLog() as log:
        run = await meguro.jobs.run("list_sync")
        assert run.outcome == "failed"
        await meguro.jobs.run("health")
        await meguro.jobs.run("health")
        assert checks(meguro.health) == {"HubUnreachable": CRITICAL}
        code, told = await get_health(node_health(box))
        assert code == 503 and told["live"] and not told["ready"]
        assert told["failing"][0]["check"] == "HubUnreachable"
        assert (await get_health(node_health(box), "/health/live"))[0] == 200
        assert (await get_health(node_health(box), "/health/ready"))[0] == 503

        listed = meguro.lists.current
        left = (listed.expires_at - meguro.now()).total_seconds()
        box.clock.advance(left - 600)  # the test list is valid 3600 s: warned 900 s before
        await meguro.jobs.run("health")
        assert checks(meguro.health) == {
            "HubUnreachable": CRITICAL,
            "PermittedListExpiring": WARNING,
        }
        box.clock.advance(601)
        await meguro.jobs.run("health")
        assert checks(meguro.health) == {
            "HubUnreachable": CRITICAL,
            "PermittedListExpired": CRITICAL,
        }
    lines = [line for line in log.lines if line.startswith("health of meguro: ")]
    firing = [line for line in lines if "no longer" not in line]
    assert [line.split(": ")[1].split(" ")[0] for line in firing] == [
        "HubUnreachable",
        "PermittedListExpiring",
        "PermittedListExpired",
    ]
    assert sum("PermittedListExpiring no longer failing" in line for line in lines) == 1


@pytest_twisted.ensureDeferred
async def test_a_database_that_does_not_answer_makes_a_party_not_ready_until_it_does(
    box: Any,
) -> None:
    """The hub's database failing is DatabaseDown (critical: 503 with what failed); once
    it answers again the check resolves and the hub is ready."""
    box.clock.freeze()
    hub = box.hub
    read = hub.database.read

    def failing(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    hub.database.read = failing
    try:
        await hub.jobs.run("health")
        code, told = await get_health(hub_health(box))
        assert code == 503 and not told["ready"]
        (problem,) = told["failing"]
        assert (problem["check"], problem["severity"]) == ("DatabaseDown", CRITICAL)
        assert "RuntimeError: disk full" in problem["summary"]
    finally:
        hub.database.read = read
    await hub.jobs.run("health")
    code, told = await get_health(hub_health(box))
    assert code == 200 and told["failing"] == []


@pytest_twisted.ensureDeferred
async def test_a_failing_job_is_a_health_problem_and_shows_in_the_metrics(box: Any) -> None:
    """A metrics refresh that fails is not swallowed: its job fails (renkei_job_failing 1,
    renkei_job_failures_total 1) and the health says JobFailing for it; the next good
    refresh clears both."""
    import treq

    box.clock.freeze()
    meguro = box.nodes["meguro"]
    url = f"http://127.0.0.1:{port_of(node_health(box))}/metrics"
    labels = f'institution="{MEGURO}",job="metrics"'
    registry = box.metrics["meguro"].registry
    gauges = meguro.store.statistics.gauges

    def failing() -> Any:
        raise RuntimeError("disk full")

    meguro.store.statistics.gauges = failing
    try:
        run = await meguro.jobs.run("metrics")
        assert run.outcome == "failed"
        await meguro.jobs.run("health")
        (problem,) = meguro.health.failing
        assert (problem.check, dict(problem.labels)) == ("JobFailing", {"job": "metrics"})
        assert "disk full" in problem.summary
        text = await (await treq.get(url)).text()
        assert f"renkei_job_failing{{{labels}}} 1.0" in text
        assert f"renkei_job_failures_total{{{labels}}} 1.0" in text
    finally:
        meguro.store.statistics.gauges = gauges
    run = await meguro.jobs.run("metrics")
    assert run.outcome == "succeeded"
    await meguro.jobs.run("health")
    assert meguro.health.failing == []
    text = await (await treq.get(url)).text()
    assert f"renkei_job_failing{{{labels}}} 0.0" in text
    assert f"renkei_job_failures_total{{{labels}}} 1.0" in text
    sample = {"institution": MEGURO, "job": "metrics"}
    assert (
        registry.get_sample_value("renkei_job_last_success_timestamp_seconds", sample)
        == run.ended_at.timestamp()
    )
    assert registry.get_sample_value("renkei_job_last_duration_seconds", sample) == run.duration


@pytest_twisted.ensureDeferred
async def test_the_hub_serves_the_metrics_of_its_jobs(box: Any) -> None:
    """The hub's health listener serves /metrics: its jobs' last success, duration and
    failures, labelled institution="hub"."""
    import treq

    await box.hub.jobs.run("list_issue")
    text = await (await treq.get(f"http://127.0.0.1:{port_of(hub_health(box))}/metrics")).text()
    assert 'renkei_job_last_success_timestamp_seconds{institution="hub",job="list_issue"}' in text
    assert 'renkei_job_failures_total{institution="hub",job="outbox"} 0.0' in text


# -- the alerts ------------------------------------------------------------------------------


class Receiver(Resource):
    """A webhook receiver: keeps every notification posted to it and answers with the next
    of ``answers`` (then 200)."""

    isLeaf = True

    def __init__(self, answers: list[int]) -> None:
        super().__init__()
        self.answers = answers
        self.posts: list[tuple[str, Any]] = []

    def render_POST(self, request: Request) -> bytes:
        content_type = (request.getHeader(b"content-type") or b"").decode()
        assert request.content is not None
        self.posts.append((content_type, json.loads(request.content.read())))
        request.setResponseCode(self.answers.pop(0) if self.answers else 200)
        return b"{}"

    def bodies(self, match: Callable[[Any], bool]) -> list[Any]:
        return [body for _, body in self.posts if match(body)]


@pytest_twisted.async_yield_fixture
async def alerted(tmp_path: Path, network_pki: Path) -> AsyncIterator[tuple[Any, Receiver]]:
    """A box whose parties post their health's changes to a webhook listening here, which
    refuses the first notification (503) and takes the others; and whose outbox backlog
    warns from one message on."""
    from twisted.internet import reactor

    from tests.conftest import running_box

    receiver = Receiver([503])
    port: Any = cast(Any, reactor).listenTCP(0, Site(receiver), interface="127.0.0.1")
    sections = f"""
[health]
outbox_backlog = 0

[alerts]
webhook = http://127.0.0.1:{port.getHost().port}/alerts
receiver = operators
retry_initial = 1
retry_maximum = 4
attempts = 5
timeout = 5
"""
    config = write_config(tmp_path, network_pki, sections=sections)
    running = await running_box(config, in_memory=True)
    try:
        yield running, receiver
    finally:
        await running.stopService()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_health_changes_are_posted_in_alertmanagers_format_and_retried(
    alerted: tuple[Any, Receiver],
) -> None:
    """A job that starts failing is posted as a firing JobFailing alert (Alertmanager's
    webhook JSON, version 4); the receiver's 503 makes it come again after the backoff, on
    the network's clock; once the job succeeds, the alert is posted resolved with its end."""
    box, receiver = alerted
    box.clock.freeze()
    meguro = box.nodes["meguro"]
    failing = [True]

    def nightly() -> None:
        if failing[0]:
            raise RuntimeError("the backup disk is full")

    meguro.jobs.add("nightly", 86400, nightly, now=False)
    await meguro.jobs.run("nightly")
    await meguro.jobs.run("health")

    def ours(body: Any) -> bool:
        labels = body["commonLabels"]
        return bool(labels["party"] == "meguro" and labels["alertname"] == "JobFailing")

    await wait_until(lambda: len(receiver.bodies(ours)) == 1)
    assert meguro.health.failing[0].check == "JobFailing"
    box.clock.advance(1)  # the backoff after the 503
    await wait_until(lambda: len(receiver.bodies(ours)) == 2)
    refused, taken = receiver.bodies(ours)
    assert refused == taken
    assert receiver.posts[0][0] == "application/json"
    assert taken["version"] == "4" and taken["status"] == "firing"
    assert taken["receiver"] == "operators"
    assert taken["groupLabels"] == {"alertname": "JobFailing", "party": "meguro"}
    assert taken["groupKey"] == '{}:{alertname="JobFailing", party="meguro"}'
    (alert,) = taken["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "JobFailing",
        "severity": "warning",
        "party": "meguro",
        "institution": MEGURO,
        "job": "nightly",
    }
    assert "the backup disk is full" in alert["annotations"]["summary"]
    since = meguro.health.failing[0].since
    assert alert["startsAt"] == iso(since)
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert len(alert["fingerprint"]) == 16

    failing[0] = False
    box.clock.advance(59)  # the job's next try (or this run) succeeds
    await meguro.jobs.run("nightly")
    await meguro.jobs.run("health")
    await wait_until(lambda: len(receiver.bodies(ours)) == 3)
    resolved = receiver.bodies(ours)[2]
    assert resolved["status"] == "resolved"
    (ended,) = resolved["alerts"]
    assert ended["status"] == "resolved" and ended["labels"] == alert["labels"]
    assert ended["fingerprint"] == alert["fingerprint"]
    assert ended["startsAt"] == alert["startsAt"]
    assert ended["endsAt"] == iso(meguro.now())


@pytest_twisted.ensureDeferred
async def test_an_outbox_backlog_over_the_threshold_fires_and_resolves(
    alerted: tuple[Any, Receiver],
) -> None:
    """With Setagaya stopped, the provision request the hub cannot deliver waits in its
    outbox: OutboxBacklog (a warning: the hub stays ready) fires and is posted; once
    Setagaya is back and the message delivered, it resolves and that is posted too."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    box, receiver = alerted
    hub = box.hub
    outbox = hub.outbox.table
    await box.stop_party("setagaya")
    client = BackOfficeClient(reactor, box.config, box.config.institution("meguro"), CARE_INSURANCE)
    try:
        await ask_tax(client)
    finally:
        await client.close()
    await wait_until(lambda: count(box, "hub", outbox, outbox.c.state == PENDING) == 1)
    await hub.jobs.run("health")
    assert checks(hub.health) == {"OutboxBacklog": WARNING}
    assert hub.health.ready
    assert "1 messages wait in the outbox" in hub.health.failing[0].summary

    def backlog(status: str) -> Callable[[Any], bool]:
        return lambda body: (
            body["status"] == status and body["commonLabels"]["alertname"] == "OutboxBacklog"
        )

    await wait_until(lambda: len(receiver.bodies(backlog("firing"))) == 1)
    await box.start_party("setagaya")
    await wait_until(lambda: count(box, "hub", outbox, outbox.c.state == PENDING) == 0)
    await hub.jobs.run("health")
    assert "OutboxBacklog" not in checks(hub.health)
    await wait_until(lambda: len(receiver.bodies(backlog("resolved"))) == 1)
