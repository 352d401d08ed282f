"""The crash campaign's short version (bench/chaos.py --quick): queries while parties are
killed with SIGKILL; nothing lost, nothing doubled, every chain intact, nothing stuck."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def test_queries_survive_parties_killed_with_sigkill() -> None:
    """60 queries while the hub or a node is killed three times: every query is provided
    once, every party holds its records once, the chains verify, no message is left."""
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "bench" / "chaos.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost 0, doubled 0: OK" in result.stdout
    assert result.stdout.count("ready again after") == 3
