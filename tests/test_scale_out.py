"""Several processes for one institution (``processes = 2``): Meguro served by two processes
sharing one PostgreSQL database and its listening ports, one of them killed mid-run with
SIGKILL (bench/chaos.py); nothing lost, nothing done twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from middleware.config import ConfigError, load_config
from tests.network import write_config
from tests.test_chaos import run_chaos


def test_two_processes_of_one_institution_share_its_work_and_survive_a_kill(
    postgresql_database: Any,
) -> None:
    """80 queries, half of them the lines of bulk queries, while one of Meguro's two
    processes is killed twice: every query is provided once, every party holds its records
    once, the chains verify, no message or line is left."""
    printed = run_chaos(
        *("--flows", "80", "--kills", "2", "--persons", "30"),
        *("--meguro-processes", "2", "--meguro-database", postgresql_database()),
        *("--kill-only", "meguro", "--bulk-share", "0.5", "--bulk-lines", "20"),
    )
    assert printed.count("killed meguro.") == 2


def test_several_processes_need_a_shared_database(tmp_path: Path) -> None:
    """processes = 2 on SQLite is refused at load, with the reason."""
    config = write_config(tmp_path, tmp_path / "pki")
    text = config.path.read_text().replace(
        "kind = municipality\n", "kind = municipality\nprocesses = 2\n", 1
    )
    config.path.write_text(text)
    with pytest.raises(ConfigError, match="needs a PostgreSQL database"):
        load_config(config.path)
