"""Scenario runs kept on disk: each outcome written as the run goes (one JSON line per
scenario: its steps, verdicts, the messages captured, the back offices' requests, the faults'
hits), so that a report can be made again later, after a restart too (``renkei scenario
report RUN``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from middleware.clock import iso
from renkei.scenarios.loading import Scenario
from renkei.scenarios.outcomes import ScenarioOutcome, StepOutcome
from simulators.capture import MessageLog, exchange_from_json, exchange_to_json
from simulators.faults import Hit

__all__ = ["OUTCOMES", "outcome_from_json", "outcome_to_json", "read_run", "record_outcome"]

OUTCOMES = "outcomes.jsonl"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def outcome_to_json(outcome: ScenarioOutcome) -> dict[str, Any]:
    """An outcome as JSON (read back by `outcome_from_json`)."""
    scenario = outcome.scenario
    return {
        "scenario": {
            "path": str(scenario.path),
            "name": scenario.name,
            "purpose": scenario.purpose,
            "tags": list(scenario.tags),
            "actors": scenario.actors,
            "given": scenario.given,
            "steps": list(scenario.steps),
            "lines": list(scenario.lines),
        },
        "steps": [step.__dict__ for step in outcome.steps],
        "failure": outcome.failure,
        "skipped": outcome.skipped,
        "seconds": outcome.seconds,
        "messages": [exchange_to_json(exchange) for exchange in outcome.messages.exchanges],
        "calls": [{**call, "at": iso(call["at"])} for call in outcome.calls],
        "hits": [{**hit.__dict__, "at": iso(hit.at)} for hit in outcome.hits],
        "names": outcome.names,
    }


def outcome_from_json(document: dict[str, Any]) -> ScenarioOutcome:
    found = document["scenario"]
    scenario = Scenario(
        path=Path(found["path"]),
        name=found["name"],
        purpose=found["purpose"],
        tags=tuple(found["tags"]),
        actors=found["actors"],
        given=found["given"],
        steps=tuple(found["steps"]),
        lines=tuple(found["lines"]),
    )
    messages = MessageLog()
    messages.exchanges += [exchange_from_json(exchange) for exchange in document["messages"]]
    return ScenarioOutcome(
        scenario=scenario,
        steps=[StepOutcome(**step) for step in document["steps"]],
        failure=document["failure"],
        seconds=document["seconds"],
        skipped=document["skipped"],
        messages=messages,
        calls=[{**call, "at": _time(call["at"])} for call in document["calls"]],
        hits=[Hit(**{**hit, "at": _time(hit["at"])}) for hit in document["hits"]],
        names=document["names"],
    )


def record_outcome(run: Path, outcome: ScenarioOutcome) -> None:
    """Append one outcome to the run kept in ``run`` (a folder)."""
    run.mkdir(parents=True, exist_ok=True)
    with (run / OUTCOMES).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(outcome_to_json(outcome), ensure_ascii=False) + "\n")


def read_run(run: Path) -> list[ScenarioOutcome]:
    """The outcomes kept in ``run``, in the order they ended."""
    with (run / OUTCOMES).open(encoding="utf-8") as handle:
        return [outcome_from_json(json.loads(line)) for line in handle if line.strip()]
