"""The nation in one box, small (bench/national.py): three municipalities, the pension
institution and the welfare office on the in-memory network, every flow of the mix ending
as expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def test_every_flow_of_a_small_nation_ends_provided(tmp_path: Path) -> None:
    """Three municipalities for a couple of seconds: every party starts, every person is
    registered, and every flow of every category ends ``provided`` (exit status 0)."""
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "bench" / "national.py"),
            *("--municipalities", "3", "--persons", "4", "--concurrency", "8"),
            *("--idle", "0.5", "--warmup", "0.5", "--seconds", "2", "--json", str(figures)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(figures.read_text(encoding="utf-8"))
    assert report["start"]["parties"] == 6  # the hub, 3 municipalities, pension, welfare
    assert report["population"]["persons"] == 12
    flows = report["flows"]
    assert flows["errors"] == 0
    assert set(flows["final_states"]) == {"provided"}
    assert flows["flows_in_window"] > 0
