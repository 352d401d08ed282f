"""A running network's conversation, read from what its processes captured.

While a scenario runs against a network of processes, each party's process appends each
exchange it sends to a capture file of its own (simulators/capture.py `CaptureFile`, switched
on through the control API). `CapturedLog` is the scenario's `MessageLog` then: it notes
where each file stood when the scenario started, takes in what was appended since
(`refresh`: a ``resend`` step looks for its message there) and, at the end, puts the
exchanges of every process and the back offices' requests in one order, by the real time
each was sent (`conversation`), for the always-on checks and the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulators.capture import Exchange, MessageLog, read_captured

__all__ = ["CapturedLog"]


class CapturedLog(MessageLog):
    """The exchanges a running network's processes captured since `start`."""

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self._reactor = reactor  # real time
        self._directory: Path | None = None
        self._offsets: dict[Path, int] = {}  # how far each file has been read
        self._read: list[tuple[float, Exchange]] = []  # each with the real time it was sent
        self._real: dict[int, float] = {}  # the real time each order number was handed out

    def next_order(self) -> int:
        order = super().next_order()
        self._real[order] = float(self._reactor.seconds())
        return order

    def start(self, directory: Path) -> None:
        """Read what the processes append to their files in ``directory`` from now on."""
        self._directory = directory
        self._offsets = {path: path.stat().st_size for path in directory.glob("*.jsonl")}

    def refresh(self) -> None:
        """Take in what every process appended since the last look."""
        if self._directory is None:
            return
        for path in sorted(self._directory.glob("*.jsonl")):
            found, self._offsets[path] = read_captured(path, self._offsets.get(path, 0))
            self._read += found
        self._read.sort(key=lambda read: read[0])
        self.exchanges[:] = [exchange for _, exchange in self._read]

    def conversation(self, calls: list[dict[str, Any]]) -> MessageLog:
        """Everything captured, and the back offices' requests ``calls`` (each numbered by
        `next_order` as it was made), in the order they were sent: each exchange and each
        call given its ``order`` in it."""
        self.refresh()
        events: list[tuple[float, int, Any]] = [
            (self._real.get(call["order"], 0.0), 0, call) for call in calls
        ]
        events += [(real, 1, exchange) for real, exchange in self._read]
        events.sort(key=lambda event: (event[0], event[1]))
        log = MessageLog()
        for order, (_, _, event) in enumerate(events):
            if isinstance(event, dict):
                event["order"] = order
            else:
                event.order = order
                log.exchanges.append(event)
        return log
