"""The alert webhook: each change of a party's health posted in Alertmanager's webhook JSON.

With ``[alerts] webhook`` configured, every party posts each change of its health
(middleware/health.py: a check starting or ending to fail) to that URL, as Alertmanager's
``webhook_config`` posts a notification (JSON, ``"version": "4"``): one alert per
notification, ``status`` ``firing`` or ``resolved``, the labels ``alertname`` (the check),
``severity``, ``party`` and ``institution`` (and ``job`` for ``JobFailing``), the
annotations ``summary`` and ``description``, ``startsAt`` (when the check started failing)
and ``endsAt`` (when it stopped; Alertmanager's zero time while it fires). A receiver built
for Alertmanager (a chat bridge, a pager, Alertmanager's own test receivers) takes them as
they are.

Notifications go out one at a time, in the order of the changes. One that fails (no
connection, a timeout, a 5xx, 408 or 429) is tried again after a backoff on the party's
clock (``retry_initial`` doubling up to ``retry_maximum``), at most ``attempts`` times, then
dropped with a logged error; one refused with another 4xx is dropped at once (the receiver
will never take it). At most `QUEUE_LIMIT` wait; beyond, the oldest waiting is dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import treq
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from crypto.tls import QuietConnectionPool
from middleware.clock import ReactorTime, iso
from middleware.config import AlertsConfig
from middleware.deferred import deferred
from middleware.health import FIRING, Change, Health
from middleware.jobs import Backoff

__all__ = ["NOT_ENDED", "QUEUE_LIMIT", "AlertWebhook", "alertmanager_notification"]

# Alertmanager's endsAt of an alert still firing (Go's zero time).
NOT_ENDED = "0001-01-01T00:00:00Z"
# Statuses a receiver gives that may change when asked again.
RETRIED_STATUSES = frozenset({408, 429})
# Notifications kept waiting at most (a receiver down for long): the oldest go first.
QUEUE_LIMIT = 1000


def alertmanager_notification(
    change: Change, health: Health, receiver: str, external_url: str = ""
) -> dict[str, Any]:
    """The notification of one change, as Alertmanager's webhook (version 4) posts it."""
    problem = change.problem
    labels = {
        "alertname": problem.check,
        "severity": problem.severity,
        "party": health.name,
        "institution": health.code,
        **dict(problem.labels),
    }
    annotations = {
        "summary": problem.summary,
        "description": (
            f"{problem.check} at {health.name} ({health.code}): {problem.severity},"
            f" failing since {iso(problem.since)}"
            + (f", no longer since {iso(change.ended_at)}" if change.ended_at else "")
        ),
    }
    ended: datetime | None = change.ended_at
    group = {"alertname": problem.check, "party": health.name}
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}",
        "truncatedAlerts": 0,
        "status": change.status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": change.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": iso(problem.since),
                "endsAt": NOT_ENDED if change.status == FIRING or ended is None else iso(ended),
                "generatorURL": external_url,
                "fingerprint": _fingerprint(labels),
            }
        ],
    }


def _fingerprint(labels: dict[str, str]) -> str:
    """What identifies an alert across its notifications (as Alertmanager's, 16 hex digits
    from its labels)."""
    text = json.dumps(labels, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(text).hexdigest()[:16]


@dataclass
class _Pending:
    """A notification waiting to be delivered, and the attempts it has had."""

    body: dict[str, Any]
    attempts: int = 0


class AlertWebhook(Service):
    """Posts the changes of one party's health to the configured webhook while it runs."""

    log = Logger()

    def __init__(
        self,
        health: Health,
        config: AlertsConfig,
        clock: ReactorTime,
        reactor: Any,
        *,
        external_url: str = "",
    ) -> None:
        self.health = health
        self.config = config
        self._clock = clock
        self._reactor = reactor
        self._external_url = external_url
        self._backoff = Backoff(config.retry_initial, config.retry_maximum)
        self._queue: deque[_Pending] = deque()
        self._sending: Deferred[None] | None = None
        self._retry: Any = None
        self._pool: QuietConnectionPool | None = None
        self._http: HTTPClient | None = None
        self.delivered = 0
        self.dropped = 0

    def startService(self) -> None:
        super().startService()
        self._pool = QuietConnectionPool(self._reactor, persistent=False)
        self._http = HTTPClient(cast(IAgent, Agent(self._reactor, pool=self._pool)))
        self.health.watch(self.notify)

    @deferred
    async def stopService(self) -> None:
        super().stopService()
        self.health.unwatch(self.notify)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._sending is not None:
            self._sending.cancel()
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        if self._queue:
            self.log.warn(
                "{count} alert notifications of {party} not delivered (stopping)",
                count=len(self._queue),
                party=self.health.name,
            )

    def notify(self, change: Change) -> None:
        """Queue the notification of ``change`` (a watcher of the health)."""
        body = alertmanager_notification(
            change, self.health, self.config.receiver, self._external_url
        )
        if len(self._queue) >= QUEUE_LIMIT:
            # The oldest waiting, not the one being posted.
            oldest = 1 if self._sending is not None else 0
            dropped = self._queue[oldest]
            del self._queue[oldest]
            self.dropped += 1
            self.log.error(
                "alert {alert} of {party} dropped: {limit} notifications wait already",
                alert=dropped.body["groupKey"],
                party=self.health.name,
                limit=QUEUE_LIMIT,
            )
        self._queue.append(_Pending(body))
        self._next()

    @property
    def waiting(self) -> int:
        """Notifications not delivered yet."""
        return len(self._queue)

    def _next(self) -> None:
        if self.running and self._sending is None and self._retry is None and self._queue:
            sending = self._send(self._queue[0])
            if not sending.called:  # (one that ended at once has sent the next already)
                self._sending = sending

    @deferred
    async def _send(self, pending: _Pending) -> None:
        pending.attempts += 1
        try:
            outcome = await self._post(pending.body)
        except CancelledError:
            return
        self._sending = None
        if outcome is None:
            self._queue.popleft()
            self.delivered += 1
        elif outcome.startswith("refused") or pending.attempts >= self.config.attempts:
            self._queue.popleft()
            self.dropped += 1
            self.log.error(
                "alert {alert} of {party} not delivered to {webhook} after {attempts}"
                " attempts: {outcome}",
                alert=pending.body["groupKey"],
                party=self.health.name,
                webhook=self.config.webhook,
                attempts=pending.attempts,
                outcome=outcome,
            )
        else:
            delay = self._backoff.delay(pending.attempts)
            self.log.warn(
                "alert of {party} not delivered to {webhook} ({outcome}); trying again in"
                " {delay:.0f} s",
                party=self.health.name,
                webhook=self.config.webhook,
                outcome=outcome,
                delay=delay,
            )
            self._retry = self._clock.callLater(delay, self._retry_now)
            return
        self._next()

    def _retry_now(self) -> None:
        self._retry = None
        self._next()

    async def _post(self, body: dict[str, Any]) -> str | None:
        """Post one notification: None when taken, else what went wrong (``refused …``
        when asking again cannot help)."""
        assert self._http is not None
        try:
            response = await self._http.post(
                self.config.webhook,
                data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                headers=Headers({b"Content-Type": [b"application/json"]}),
                timeout=self.config.timeout,
            )
            await treq.content(response)
        except CancelledError:
            if not self.running:
                raise
            return "no answer in time"
        except Exception as failure:
            return f"{type(failure).__name__}: {failure}"[:200]
        if 200 <= response.code < 300:
            return None
        if 400 <= response.code < 500 and response.code not in RETRIED_STATUSES:
            return f"refused with HTTP {response.code}"
        return f"HTTP {response.code}"
