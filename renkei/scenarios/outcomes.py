"""What became of a scenario and of each of its steps, and why a step fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from renkei.scenarios.loading import Scenario
from simulators.capture import MessageLog

__all__ = ["ScenarioOutcome", "StepFailed", "StepOutcome"]


class StepFailed(Exception):
    """A step whose expectation does not hold (its message says what was expected and seen)."""


@dataclass(frozen=True)
class StepOutcome:
    """What became of one step."""

    number: int  # 1-based
    kind: str
    line: int
    passed: bool
    detail: str
    seconds: float


@dataclass
class ScenarioOutcome:
    """What became of one scenario: each step run, and why it failed if it did."""

    scenario: Scenario
    steps: list[StepOutcome] = field(default_factory=list)
    failure: str | None = None
    seconds: float = 0.0
    skipped: str | None = None  # why it was not run (a step its network cannot take)
    messages: MessageLog = field(default_factory=MessageLog)  # every message exchanged
    calls: list[dict[str, Any]] = field(default_factory=list)  # the back offices' requests
    hits: list[Any] = field(default_factory=list)  # the faults' hits (simulators.faults.Hit)
    names: dict[str, str] = field(default_factory=dict)  # party code → its name

    @property
    def passed(self) -> bool:
        return self.failure is None
