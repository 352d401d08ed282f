"""`renkei populate` and `renkei use-case` as a user runs them against a running box."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest_twisted
from click.testing import CliRunner
from sqlalchemy import Connection, func, select

from middleware.tables import person, replica_record, resident
from renkei.cli import main
from simulators.population import generate
from simulators.seeding import holdings
from tests.network import REPOSITORY


async def renkei(*args: str) -> tuple[str, str, int]:
    """Run the CLI in a process of its own (the box runs in this process's reactor)."""
    from twisted.internet.utils import getProcessOutputAndValue

    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-c", "from renkei.cli import main; main()", *args],
        env=dict(os.environ),
        path=str(REPOSITORY),
    )
    return out.decode(), err.decode(), code


def _count(database: Any, table: Any) -> int:
    def read(connection: Connection) -> int:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

    return int(database.run_blocking(read))


@pytest_twisted.ensureDeferred
async def test_populate_loads_a_generated_population_into_the_running_box(box: Any) -> None:
    """`renkei populate --municipality meguro --size 300` puts every resident into the
    registry and Meguro's insured persons and their 副本 into Meguro's node; running it
    again adds nothing."""
    residents_before = _count(box.hub.database, resident)
    persons_before = _count(box.nodes["meguro"].database, person)
    records_before = _count(box.nodes["meguro"].database, replica_record)
    args = ("populate", "-c", str(box.config.path), "--municipality", "meguro", "--size", "300")
    out, err, code = await renkei(*args)
    assert code == 0, out + err
    generated = {"meguro": generate("meguro", 300)}
    held = holdings(box.config.institution("meguro"), generated)
    assert _count(box.hub.database, resident) == residents_before + len(generated["meguro"])
    assert _count(box.nodes["meguro"].database, person) == persons_before + len(held)
    records = sum(len(h.records) for h in held)
    assert _count(box.nodes["meguro"].database, replica_record) == records_before + records
    out, err, code = await renkei(*args)
    assert code == 0, out + err
    assert "0 residents added" in out
    assert _count(box.nodes["meguro"].database, replica_record) == records_before + records


def test_populate_refuses_a_numbered_size_for_all_wards() -> None:
    """A number of residents is for one ward only: with --municipality all it is refused."""
    result = CliRunner().invoke(main, ["populate", "--municipality", "all", "--size", "100"])
    assert result.exit_code == 2
    assert "small or full" in result.output


def test_use_case_help_names_the_four_use_cases() -> None:
    """`renkei use-case --help` describes the four use cases."""
    result = CliRunner().invoke(main, ["use-case", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("premium assessment", "Setagaya", "Shibuya", "pension-office"):
        assert words in text
