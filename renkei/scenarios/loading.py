"""Scenario files: YAML checked against the shipped JSON Schema (scenario.schema.json).

A file that is not a scenario is refused with `ScenarioInvalid`: the file, the line and what
is wrong ("scenarios/x.yaml:12: steps[2].wait: 'state' is a required property").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["SCHEMA", "Scenario", "ScenarioInvalid", "load_scenario", "load_scenarios"]

SCHEMA = json.loads((Path(__file__).parent / "scenario.schema.json").read_text(encoding="utf-8"))
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class ScenarioInvalid(Exception):
    """A scenario file that cannot be run: where and why."""

    def __init__(self, path: Path, line: int | None, what: str) -> None:
        self.path, self.line, self.what = path, line, what
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True)
class Scenario:
    """One scenario, checked: its name, purpose, tags, actors, given state and steps (as
    the file has them), and where each step is written."""

    path: Path
    name: str
    purpose: str
    tags: tuple[str, ...]
    actors: dict[str, Any]
    given: dict[str, Any]
    steps: tuple[dict[str, Any], ...]
    lines: tuple[int, ...] = field(default=())  # the line of each step


def _line_of(node: Any, path: Sequence[Any]) -> int | None:
    """The line (1-based) of the YAML node at ``path`` (keys and indexes), or of the
    nearest node above it."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
        else:
            found = None
        if found is None:
            break
        node = found
        line = node.start_mark.line + 1
    return line


def _where(path: Sequence[Any]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "(the file)"


def load_scenario(path: Path) -> Scenario:
    """Read and check one scenario file; `ScenarioInvalid` when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as failure:
        raise ScenarioInvalid(path, None, f"cannot be read: {failure}") from None
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as failure:
        mark = getattr(failure, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(failure, "problem", None) or str(failure)
        raise ScenarioInvalid(path, line, f"not YAML: {problem}") from None
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = min(errors, key=lambda e: (len(list(e.absolute_path)), str(e.message)))
        error = jsonschema.exceptions.best_match(errors) or error
        where = list(error.absolute_path)
        raise ScenarioInvalid(path, _line_of(tree, where), f"{_where(where)}: {error.message}")
    steps = tuple(document["steps"])
    return Scenario(
        path=path,
        name=document["name"],
        purpose=document["purpose"],
        tags=tuple(document.get("tags", ())),
        actors=dict(document.get("actors", {})),
        given=dict(document.get("given", {})),
        steps=steps,
        lines=tuple(_line_of(tree, ["steps", index]) or 0 for index in range(len(steps))),
    )


def load_scenarios(paths: Iterable[Path]) -> list[Scenario]:
    """Every scenario of ``paths`` (files, or folders of ``*.yaml``), by name; two of one
    name are refused."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    scenarios = [load_scenario(file) for file in files]
    seen: dict[str, Path] = {}
    for scenario in scenarios:
        if scenario.name in seen:
            raise ScenarioInvalid(
                scenario.path, None, f"name {scenario.name!r} is also {seen[scenario.name]}'s"
            )
        seen[scenario.name] = scenario.path
    return scenarios
