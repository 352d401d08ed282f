"""The health of a party (稼働状態): what is failing, looked at every few seconds, and when.

`Health` is a part of every party (``party.health``): its ``health`` job (every ``[health]
interval`` seconds of the party's clock) looks at

- the database: it answers a read (``DatabaseDown`` when it does not);
- the outbox: its backlog over ``outbox_backlog`` messages (``OutboxBacklog``), its oldest
  message waiting longer than ``outbox_wait`` seconds (``OutboxStuck``);
- the permitted-query list in force: none or expired (``PermittedListExpired``), or expiring
  within ``list_warning`` seconds, by default a quarter of its validity
  (``PermittedListExpiring``);
- the hub, from a node: its last list sync failed because the hub could not be reached or
  did not answer (``HubUnreachable``);
- the party's jobs: one whose last run failed (``JobFailing``, one per job).

A check that starts or ends failing is a change (`Change`, firing or resolved): logged one
line each, handed to whoever watches (the alert webhook, adapters/alerts.py); the console
shows what is failing as a banner. A party is live while it runs, and ready once it has
been looked at and no critical check fails. Nothing here speaks HTTP: the listeners of
``/health`` are adapters/metrics.py (a node's) and simulators/network/health.py (the hub's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from twisted.logger import Logger

from middleware.clock import iso
from middleware.config import HealthConfig
from middleware.events import japan_time
from middleware.jobs import JobState
from middleware.network import TransientFailure
from middleware.outbox import outbox_figures
from middleware.party import Party
from middleware.permitted_list import PermittedList

__all__ = [
    "CHECKS",
    "CRITICAL",
    "FIRING",
    "JOB",
    "RESOLVED",
    "WARNING",
    "Change",
    "Health",
    "Problem",
]

JOB = "health"  # the name of the job that looks

CRITICAL = "critical"
WARNING = "warning"
FIRING = "firing"
RESOLVED = "resolved"

# Every check (an alert's name) and its severity: a critical one makes the party not ready.
CHECKS: Mapping[str, str] = {
    "DatabaseDown": CRITICAL,
    "PermittedListExpired": CRITICAL,
    "HubUnreachable": CRITICAL,
    "PermittedListExpiring": WARNING,
    "OutboxBacklog": WARNING,
    "OutboxStuck": WARNING,
    "JobFailing": WARNING,
}


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Problem:
    """A check failing: its name, severity, what it found (one line), since when, and the
    labels that tell it from another of the same check (``job`` of a ``JobFailing``)."""

    check: str
    severity: str
    summary: str
    since: datetime
    labels: Labels = ()

    @property
    def key(self) -> tuple[str, Labels]:
        """What stays the same while the problem lasts."""
        return self.check, self.labels

    def as_json(self) -> dict[str, Any]:
        """The problem as the ``/health`` JSON shows it."""
        return {
            "check": self.check,
            "severity": self.severity,
            "summary": self.summary,
            "since": iso(self.since),
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class Change:
    """A check that started failing (``firing``) or stopped (``resolved``, at ``ended_at``)."""

    problem: Problem
    status: str
    ended_at: datetime | None = None


Watcher = Callable[[Change], None]
Found = tuple[str, str, Labels]  # a check failing, what it found, its labels


class Health:
    """The health of one party, looked at by its ``health`` job."""

    log = Logger()

    def __init__(
        self,
        party: Party,
        policy: HealthConfig,
        name: str,
        code: str,
        *,
        permitted: Callable[[], PermittedList | None],
        missing: str,
        hub_job: str | None = None,
    ) -> None:
        """``name``: the party's name in logs and alerts (``hub``, ``meguro``), ``code`` its
        institution code (``hub`` for the hub); ``permitted``: its permitted-query list in
        force (``missing`` says what having none means); ``hub_job``: a node's job whose
        unreachable hub is ``HubUnreachable``."""
        self._party = party
        self.policy = policy
        self.name = name
        self.code = code
        self._permitted = permitted
        self._missing = missing
        self._hub_job = hub_job
        self._failing: dict[tuple[str, Labels], Problem] = {}
        self._watchers: list[Watcher] = []
        self.checked_at: datetime | None = None
        # Not at once: the party's first look comes once it has started (its list loaded).
        party.jobs.add(JOB, policy.interval, self.look, now=False)

    # -- what it says -------------------------------------------------------------------

    @property
    def failing(self) -> list[Problem]:
        """What is failing now, the critical first, then the oldest."""
        return sorted(
            self._failing.values(), key=lambda p: (p.severity != CRITICAL, p.since, p.check)
        )

    @property
    def live(self) -> bool:
        """Whether the party runs."""
        return bool(self._party.running)

    @property
    def ready(self) -> bool:
        """Whether the party can do its work: live, looked at, no critical check failing."""
        return (
            self.live
            and self.checked_at is not None
            and all(problem.severity != CRITICAL for problem in self._failing.values())
        )

    def report(self) -> dict[str, Any]:
        """The health as ``/health`` gives it (JSON): live, ready, what is failing, when it
        was looked at, and the party's jobs."""
        return {
            "party": self.name,
            "code": self.code,
            "live": self.live,
            "ready": self.ready,
            "failing": [problem.as_json() for problem in self.failing],
            "checked_at": iso(self.checked_at) if self.checked_at is not None else None,
            "jobs": [_job_json(state) for state in self._party.jobs.states()],
        }

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher(change)`` at every change (in the order they happen)."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        """Stop calling ``watcher``."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    # -- looking ------------------------------------------------------------------------

    async def look(self) -> dict[str, int]:
        """Run every check (the ``health`` job); reports how many fail."""
        now = self._party.now()
        found: list[Found] = []
        try:
            backlog, oldest = await self._party.database.read(
                outbox_figures, self._party.outbox.table
            )
        except Exception as failure:
            found.append(("DatabaseDown", f"the database does not answer: {_text(failure)}", ()))
        else:
            if backlog > self.policy.outbox_backlog:
                found.append(
                    (
                        "OutboxBacklog",
                        f"{backlog} messages wait in the outbox (over"
                        f" {self.policy.outbox_backlog})",
                        (),
                    )
                )
            if oldest is not None and (now - oldest).total_seconds() > self.policy.outbox_wait:
                found.append(
                    (
                        "OutboxStuck",
                        f"an outbox message has waited since {japan_time(oldest)}"
                        f" ({(now - oldest).total_seconds():.0f} s)",
                        (),
                    )
                )
        found += self._list_problems(now)
        found += self._job_problems()
        self._update(now, found)
        self.checked_at = now
        return {"failing": len(self._failing)}

    def _list_problems(self, now: datetime) -> list[Found]:
        permitted = self._permitted()
        if permitted is None:
            return [("PermittedListExpired", self._missing, ())]
        if permitted.expires_at <= now:
            return [
                (
                    "PermittedListExpired",
                    f"the permitted-query list (version {permitted.version}) expired at"
                    f" {japan_time(permitted.expires_at)}",
                    (),
                )
            ]
        warning = self.policy.list_warning
        if warning is None:
            warning = (permitted.expires_at - permitted.issued_at).total_seconds() / 4
        if permitted.expires_at - now <= timedelta(seconds=warning):
            return [
                (
                    "PermittedListExpiring",
                    f"the permitted-query list (version {permitted.version}) expires at"
                    f" {japan_time(permitted.expires_at)}",
                    (),
                )
            ]
        return []

    def _job_problems(self) -> list[Found]:
        found: list[Found] = []
        for state in self._party.jobs.states():
            if state.name == JOB or not state.failures:
                continue
            error = state.last_run.error if state.last_run is not None else ""
            if state.name == self._hub_job and isinstance(state.last_failure, TransientFailure):
                found.append(("HubUnreachable", f"the hub cannot be reached: {error}", ()))
                continue
            found.append(
                (
                    "JobFailing",
                    f"job {state.name} failed {state.failures} times in a row: {error}",
                    (("job", state.name),),
                )
            )
        return found

    def _update(self, now: datetime, found: list[Found]) -> None:
        """Keep what fails now; a check that starts or stops failing is a change, logged
        and handed to the watchers."""
        before = self._failing
        self._failing = {}
        changes = []
        for check, summary, labels in found:
            key = (check, labels)
            if key in self._failing:
                continue
            earlier = before.get(key)
            problem = Problem(
                check, CHECKS[check], summary, earlier.since if earlier else now, labels
            )
            self._failing[key] = problem
            if earlier is None:
                changes.append(Change(problem, FIRING))
        for key, problem in before.items():
            if key not in self._failing:
                changes.append(Change(problem, RESOLVED, ended_at=now))
        for change in changes:
            self._tell(change)

    def _tell(self, change: Change) -> None:
        problem = change.problem
        labels = "".join(f" {name}={value}" for name, value in problem.labels)
        if change.status == FIRING:
            self.log.warn(
                "health of {party}: {check}{labels} failing ({severity}): {summary}",
                party=self.name,
                check=problem.check,
                labels=labels,
                severity=problem.severity,
                summary=problem.summary,
            )
        else:
            self.log.info(
                "health of {party}: {check}{labels} no longer failing (since {since})",
                party=self.name,
                check=problem.check,
                labels=labels,
                since=iso(problem.since),
            )
        for watcher in list(self._watchers):
            try:
                watcher(change)
            except Exception:
                self.log.failure("a watcher of the health of {party} failed", party=self.name)


def _text(failure: BaseException) -> str:
    return f"{type(failure).__name__}: {failure}"[:300]


def _job_json(state: JobState) -> dict[str, Any]:
    last = state.last_run
    return {
        "job": state.name,
        "condition": state.condition,
        "last_run_at": iso(last.started_at) if last is not None else None,
        "last_outcome": last.outcome if last is not None else None,
        "next_run_at": iso(state.next_run_at) if state.next_run_at is not None else None,
        "failures": state.failures,
    }
