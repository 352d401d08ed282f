"""The placeholders of a scenario's step arguments (renkei/scenarios/templating.py) and the
partial match of a back office's answer (renkei/scenarios/back_office.py)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from renkei.scenarios.back_office import matches
from renkei.scenarios.outcomes import StepFailed
from renkei.scenarios.templating import Captured, field_of, filled

ANSWER = Captured(
    {"query_id": "q-1", "lines": 4, "by_state": {"normal_end": 3}, "records": ["a", "b"]},
    "q-1",
)


async def _resolve(expression: str) -> Any:
    name, *path = expression.split(".")
    if name != "asked":
        raise StepFailed(f"nothing was captured as {name!r}")
    return field_of(ANSWER, path, expression)


@pytest_twisted.ensureDeferred
async def test_placeholders_are_filled_everywhere_in_an_argument() -> None:
    """Strings in mappings (keys too) and lists are filled; a string that is one placeholder
    keeps the value's type, one inside text is written as text."""
    argument = {
        "path": "/queries/${asked}?wait=1",
        "json": {"count": "${asked.lines}", "whole": "${asked.by_state}"},
        "${asked}": ["${asked.records.1}", 7, None],
        "said": "lines ${asked.lines}, states ${asked.by_state}",
    }
    assert await filled(argument, _resolve) == {
        "path": "/queries/q-1?wait=1",
        "json": {"count": 4, "whole": {"normal_end": 3}},
        "q-1": ["b", 7, None],
        "said": 'lines 4, states {"normal_end": 3}',
    }


@pytest_twisted.ensureDeferred
async def test_a_placeholder_without_a_value_fails_the_step_in_words() -> None:
    """A name nothing captured, or a field the captured value lacks, fails with StepFailed
    naming the placeholder."""
    with pytest.raises(StepFailed, match="nothing was captured as 'other'"):
        await filled({"path": "/x/${other}"}, _resolve)
    with pytest.raises(StepFailed, match=r"\$\{asked.state\}: the captured value has no 'state'"):
        await filled("${asked.state}", _resolve)
    assert await filled("no ${ placeholder } here, $ {asked}", _resolve) == (
        "no ${ placeholder } here, $ {asked}"
    )


def test_an_answer_matches_the_fields_a_step_names() -> None:
    """An object may hold more fields than expected; lists and values must be equal; the
    first difference is named by its path."""
    seen = {"state": "provided", "result": {"records": [{"record_id": "R1", "x": 1}]}}
    assert matches({"state": "provided"}, seen, "the answer") is None
    assert matches({"result": {"records": [{"record_id": "R1"}]}}, seen, "the answer") is None
    assert matches({"state": "held"}, seen, "the answer") == (
        "the answer.state is 'provided', expected 'held'"
    )
    assert matches({"result": {"records": []}}, seen, "the answer") == (
        "the answer.result.records is [{'record_id': 'R1', 'x': 1}], expected 0 items"
    )
    assert matches({"error": None}, seen, "the answer") == "the answer has no 'error'"
