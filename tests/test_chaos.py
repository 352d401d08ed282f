"""The crash and fault campaigns' short versions (bench/chaos.py): queries while parties are
killed with SIGKILL, under faults on every link and with the back office's own connections
cut; nothing lost, nothing doubled, every chain intact, nothing stuck."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def run_chaos(*arguments: str) -> str:
    """bench/chaos.py with ``arguments``; what it printed, once it said nothing was lost."""
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "bench" / "chaos.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost 0, doubled 0: OK" in result.stdout
    return result.stdout


def test_queries_survive_parties_killed_with_sigkill() -> None:
    """60 queries while the hub or a node is killed three times: every query is provided
    once, every party holds its records once, the chains verify, no message is left."""
    assert run_chaos("--quick").count("ready again after") == 3


def test_queries_and_bulk_queries_survive_faults_kills_and_cut_submits() -> None:
    """Campaign (b) and (c), short: 60 queries, half in bulk queries, under drop, duplicate,
    corrupt and latency on every link, Setagaya down for 5 s, a party killed twice and a
    fifth of the back office's submits cut before their answer."""
    printed = run_chaos(
        *("--flows", "60", "--kills", "2", "--persons", "30", "--faults", "--down-for", "5"),
        *("--cut", "0.2", "--bulk-share", "0.5", "--bulk-lines", "10"),
    )
    assert printed.count("ready again after") == 2
    assert "fault f6: down on any party → setagaya" in printed
