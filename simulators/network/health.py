"""The hub's health endpoint: whether the network is ready, and what is failing.

`HubHealth` looks at the hub every few seconds (its database answers, the permitted-query
list in force has not expired, no message waits in its outbox for more than a minute) and
`health_listener` serves the result as ``GET /health`` on ``[network] health_listen``
(plain HTTP, loopback): 200 when ready, 503 with what is failing, the same checks and JSON
as a node's ``/health`` (adapters/metrics.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from adapters.listening import Listener
from adapters.metrics import HealthResource, health_failures
from middleware.clock import periodic
from middleware.deferred import deferred
from middleware.outbox import oldest_pending
from middleware.tables import hub_outbox
from simulators.network.hub import Hub

__all__ = ["HubHealth", "health_listener"]


class HubHealth(Service):
    """The hub's health, looked at every ``interval`` seconds while it runs."""

    log = Logger()

    def __init__(self, hub: Hub, interval: float = 5.0) -> None:
        self.hub = hub
        self._interval = interval
        self._loop: LoopingCall | None = None
        self.checked_at: float | None = None
        self.error: str | None = None
        self.oldest_pending: datetime | None = None

    @deferred
    async def check(self) -> None:
        """Ask the database for the oldest waiting message; a failure is shown, not raised."""
        try:
            self.oldest_pending = await self.hub.database.read(oldest_pending, hub_outbox)
        except Exception as failure:
            if self.error is None:
                self.log.failure("the hub's health not checked")
            self.error = f"{type(failure).__name__}: {failure}"[:200]
            return
        self.error = None
        self.checked_at = self.hub.clock.seconds()

    def health(self) -> dict[str, Any]:
        now = self.hub.now()
        failing = health_failures(
            now,
            self.hub.permitted_list,
            "no permitted-query list issued yet",
            self.error,
            self.checked_at,
            self.oldest_pending,
        )
        return {
            "party": "hub",
            "code": "hub",
            "ready": bool(self.hub.running) and not failing,
            "failing": failing,
            "members": len(self.hub.members),
            "checked_at": now.isoformat(),
        }

    def startService(self) -> None:
        super().startService()
        self._loop = periodic(self.check, self.hub.clock)
        self._loop.start(self._interval, now=True).addErrback(lambda failure: None)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()


def health_listener(health: HubHealth, description: str, reactor: Any) -> Listener:
    """The listener of the hub's ``/health`` (``[network] health_listen``, GET only)."""
    root = Resource()
    root.putChild(b"health", cast(IResource, HealthResource(health.health)))
    return Listener(reactor, description, root, max_body=0)
