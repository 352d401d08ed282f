"""Test helper: the log events the code under test writes, as they are published."""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import implementer

__all__ = ["LogRecorder"]


@implementer(ILogObserver)
class LogRecorder:
    """Every event logged while it is open (``with LogRecorder() as log:``)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def __enter__(self) -> LogRecorder:
        globalLogPublisher.addObserver(cast(ILogObserver, self))
        return self

    def __exit__(self, *_: Any) -> None:
        globalLogPublisher.removeObserver(cast(ILogObserver, self))

    def lines(self, namespace: str | None = None) -> list[str]:
        """The text of the events logged (of ``namespace`` only, when given)."""
        return [
            formatEvent(event)
            for event in self.events
            if namespace is None or event.get("log_namespace") == namespace
        ]
