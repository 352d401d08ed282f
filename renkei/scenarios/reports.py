"""Reports of scenario runs: JUnit XML for CI, an HTML report for people (server-rendered,
no JavaScript: a summary, then per scenario each step with its verdict, the messages as a
sequence diagram in SVG with the injected faults drawn on their arrows, each message
viewable), and the lines a person reads as a run goes."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from middleware.clock import iso
from middleware.replica import JST
from renkei.scenarios.runner import ScenarioOutcome
from simulators.faults import BUNDLES

__all__ = [
    "LANE_WIDTH",
    "ROW_HEIGHT",
    "Arrow",
    "html",
    "junit",
    "sequence",
    "summary_line",
    "write_html",
    "write_junit",
]

# What a diagram shows: the messages of the conversation (list fetches and 符号 acquisition
# only when a fault hit them).
CONVERSATION = (
    "query",
    "query_bundle",
    "provision_request",
    "provision_request_bundle",
    "provision",
    "provision_bundle",
    "records",
)
LANE_WIDTH = 190
ROW_HEIGHT = 30


def junit(outcomes: Sequence[ScenarioOutcome], suite: str = "renkei scenarios") -> bytes:
    """The outcomes as JUnit XML: one test case per scenario (classname: its file), a
    failure with the failing step's words, each step in the case's output."""
    failures = sum(1 for outcome in outcomes if not outcome.passed)
    skipped = sum(1 for outcome in outcomes if outcome.skipped is not None)
    root = ElementTree.Element("testsuites", tests=str(len(outcomes)), failures=str(failures))
    element = ElementTree.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(outcomes)),
        failures=str(failures),
        skipped=str(skipped),
        time=f"{sum(outcome.seconds for outcome in outcomes):.3f}",
    )
    for outcome in outcomes:
        case = ElementTree.SubElement(
            element,
            "testcase",
            classname=outcome.scenario.path.stem,
            name=outcome.scenario.name,
            time=f"{outcome.seconds:.3f}",
        )
        if outcome.skipped is not None:
            ElementTree.SubElement(case, "skipped", message=outcome.skipped)
        elif outcome.failure is not None:
            failure = ElementTree.SubElement(case, "failure", message=outcome.failure)
            failure.text = outcome.failure
        output = ElementTree.SubElement(case, "system-out")
        output.text = "\n".join(
            f"{step.number}. {step.kind} (line {step.line}): "
            f"{'passed' if step.passed else 'FAILED'}: {step.detail}"
            for step in outcome.steps
        )
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, outcomes: Sequence[ScenarioOutcome]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit(outcomes))


def summary_line(outcome: ScenarioOutcome) -> str:
    """One line per scenario: its verdict, name, steps and time; why it failed."""
    if outcome.skipped is not None:
        return f"skipped {outcome.scenario.name}: {outcome.skipped}"
    verdict = "passed" if outcome.passed else "FAILED"
    taken = sum(1 for step in outcome.steps if step.number > 0)  # not what the SUTs were told
    line = (
        f"{verdict:<6} {outcome.scenario.name} "
        f"({taken}/{len(outcome.scenario.steps)} steps, {outcome.seconds:.1f} s)"
    )
    if outcome.failure is not None:
        line += f"\n       {outcome.failure}"
    return line


@dataclass(frozen=True)
class Arrow:
    """One arrow of a sequence diagram: from a lane to a lane, labelled, maybe hit by faults."""

    row: int
    source: int  # lane index
    destination: int
    label: str
    detail: str  # the answer: a status, a refusal, a failure
    time: str  # Japan time, hh:mm:ss.s
    faults: tuple[str, ...]
    ok: bool
    request: str | None  # the documents, for a person to read
    answer: str | None


def _japan_time(moment: Any) -> str:
    return str(moment.astimezone(JST).strftime("%H:%M:%S"))


def sequence(outcome: ScenarioOutcome) -> tuple[list[str], list[Arrow]]:
    """The lanes (back offices and staff, then the parties: the requester, the hub, the
    providers) and the arrows of a scenario's conversation, in the order things happened."""
    names = outcome.names
    lanes: list[str] = []

    def lane(name: str) -> int:
        if name not in lanes:
            lanes.append(name)
        return lanes.index(name)

    for call in outcome.calls:
        lane(str(call["actor"]))
    hit_ids = {hit.message_id for hit in outcome.hits}
    shown = [
        exchange
        for exchange in outcome.messages.exchanges
        if exchange.operation in CONVERSATION or exchange.message_id in hit_ids
    ]
    events: list[tuple[Any, int, Any, int]] = [(c["at"], 0, c, c["order"]) for c in outcome.calls]
    events += [(e.at, 1, e, e.order) for e in shown]
    events.sort(key=lambda event: event[3])
    for _, kind, event, _ in events:  # the parties in the order they first speak
        if kind == 0:
            lane(names.get(event["party"], event["party"]))
        else:
            lane(names.get(event.source, event.source))
            lane(names.get(event.destination, event.destination))
    unclaimed = list(outcome.hits)
    arrows = []
    for row, (at, kind, event, _) in enumerate(events):
        if kind == 0:
            arrows.append(
                Arrow(
                    row,
                    lane(str(event["actor"])),
                    lane(names.get(event["party"], event["party"])),
                    str(event["what"]),
                    str(event["answer"]),
                    _japan_time(at),
                    (),
                    True,
                    None,
                    None,
                )
            )
            continue
        hit_here: list[Any] = []  # each fault hits one attempt once: drawn once per fault
        for hit in list(unclaimed):
            same = (hit.message_id, hit.source, hit.destination, hit.operation) == (
                event.message_id,
                event.source,
                event.destination,
                event.operation,
            )
            if same and hit.fault not in {drawn.fault for drawn in hit_here}:
                hit_here.append(hit)
                unclaimed.remove(hit)
        number = event.transaction_number
        label = event.operation + (f" {number}" if number else "")
        if event.operation in BUNDLES:
            lines = len(set(event.named))
            label = f"{event.operation} of {lines} line" + ("" if lines == 1 else "s")
        elif event.status:
            label += f" ({event.status})"
        detail = event.refusal or event.failure or ("answered" if event.answer else "")
        arrows.append(
            Arrow(
                row,
                lane(names.get(event.source, event.source)),
                lane(names.get(event.destination, event.destination)),
                label,
                f"{detail} in {event.seconds * 1000:.0f} ms",
                _japan_time(at),
                tuple(f"{hit.fault} {hit.kind}" for hit in hit_here),
                event.refusal is None and event.failure is None,
                event.request.decode("utf-8", "replace") if event.request else None,
                event.answer.decode("utf-8", "replace") if event.answer else None,
            )
        )
    return lanes, arrows


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def html(outcomes: Sequence[ScenarioOutcome], generated_at: Any) -> str:
    """The HTML report of a run."""
    scenarios = []
    for outcome in outcomes:
        lanes, arrows = sequence(outcome)
        scenarios.append({"outcome": outcome, "lanes": lanes, "arrows": arrows})
    return (
        _environment()
        .get_template("report.html")
        .render(
            scenarios=scenarios,
            passed=sum(1 for outcome in outcomes if outcome.passed),
            total=len(outcomes),
            generated_at=generated_at.astimezone(JST).strftime("%Y年%m月%d日 %H:%M:%S"),
            generated_iso=iso(generated_at),
            lane_width=LANE_WIDTH,
            row_height=ROW_HEIGHT,
        )
    )


def write_html(directory: Path, outcomes: Sequence[ScenarioOutcome], generated_at: Any) -> Path:
    """Write the report as ``directory/index.html``; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    path.write_text(html(outcomes, generated_at), encoding="utf-8")
    return path
