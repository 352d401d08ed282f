"""Reports of scenario runs: JUnit XML for CI, and the lines a person reads as a run goes."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

from renkei.scenarios.runner import ScenarioOutcome

__all__ = ["junit", "summary_line", "write_junit"]


def junit(outcomes: Sequence[ScenarioOutcome], suite: str = "renkei scenarios") -> bytes:
    """The outcomes as JUnit XML: one test case per scenario (classname: its file), a
    failure with the failing step's words, each step in the case's output."""
    failures = sum(1 for outcome in outcomes if not outcome.passed)
    root = ElementTree.Element("testsuites", tests=str(len(outcomes)), failures=str(failures))
    element = ElementTree.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(outcomes)),
        failures=str(failures),
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
        if outcome.failure is not None:
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
    verdict = "passed" if outcome.passed else "FAILED"
    line = (
        f"{verdict:<6} {outcome.scenario.name} "
        f"({len(outcome.steps)}/{len(outcome.scenario.steps)} steps, {outcome.seconds:.1f} s)"
    )
    if outcome.failure is not None:
        line += f"\n       {outcome.failure}"
    return line
