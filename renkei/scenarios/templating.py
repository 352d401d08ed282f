"""Values written into a scenario's step arguments: ``${...}`` placeholders.

Every string of a step's argument (keys of mappings included) may hold placeholders, filled
just before the step runs (`filled`), so a step can use what an earlier step captured:

- ``${NAME}``: the value a step captured as NAME — a query's id, a bulk query's id, a
  registered person's 統合宛名番号, a ``call``'s whole answer;
- ``${NAME.FIELD}`` (``.FIELD`` repeated, or a list index): a field of it — a query's
  ``transaction_number`` (its 処理通番, read when the placeholder is filled) or ``state``, a
  ``call`` answer's ``query_id``, a bulk query's ``by_state.normal_end``;
- ``${fugo:PARTY:PERSON}``: the 符号 of that person (統合宛名番号) at that party;
- ``${uuid}``: a new UUID (a message id, an Idempotency-Key), a new one each time;
- ``${filler:N}``: N characters of filler (a value over a size limit).
- ``${repeat:N:TEXT}``: TEXT written N times (``${repeat:40:<a>}``: elements nested too deep).

A string that is one placeholder and nothing else takes the value as it is (a number stays a
number, an answer stays an object: a ``call``'s JSON body can carry it); inside a longer
string a value is written as text (JSON for anything but a string).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from renkei.scenarios.outcomes import StepFailed

__all__ = ["PLACEHOLDER", "Captured", "field_of", "filled"]

PLACEHOLDER = re.compile(r"\$\{([^{}\s]+)\}")


@dataclass(frozen=True)
class Captured:
    """A value a step captured: what ``${NAME}`` gives (``id``), what its fields are read
    from (``value``) and the actor whose it is (a bulk query's back office, say)."""

    value: Any
    id: Any
    actor: str | None = None


async def filled(value: Any, resolve: Callable[[str], Awaitable[Any]]) -> Any:
    """``value`` (a step's argument) with every placeholder in its strings replaced by
    ``resolve(expression)`` (the text between ``${`` and ``}``)."""
    if isinstance(value, str):
        return await _filled_text(value, resolve)
    if isinstance(value, list):
        return [await filled(item, resolve) for item in value]
    if isinstance(value, dict):
        return {
            await filled(key, resolve): await filled(item, resolve) for key, item in value.items()
        }
    return value


async def _filled_text(text: str, resolve: Callable[[str], Awaitable[Any]]) -> Any:
    found = list(PLACEHOLDER.finditer(text))
    if not found:
        return text
    if len(found) == 1 and found[0].span() == (0, len(text)):
        return await resolve(found[0].group(1))
    pieces, end = [], 0
    for match in found:
        value = await resolve(match.group(1))
        pieces += [text[end : match.start()], _as_text(value)]
        end = match.end()
    return "".join(pieces) + text[end:]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def field_of(captured: Captured, path: list[str], expression: str) -> Any:
    """The field ``path`` of a captured value (its id when ``path`` is empty); StepFailed
    naming ``expression`` when there is no such field."""
    if not path:
        return captured.id
    value = captured.value
    for name in path:
        if isinstance(value, dict) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            raise StepFailed(f"${{{expression}}}: the captured value has no {name!r}")
    return value
