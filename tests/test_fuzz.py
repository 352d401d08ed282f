"""Short coverage-guided fuzzing runs of every harness in fuzz/ (docs/reliability.md).

Each run starts from the harness's seed corpus, writes what it finds to a scratch directory
(never to fuzz/corpus) and its crash files there too; a finding fails the test with libFuzzer's
report. The full campaigns are run by hand (docs/reliability.md, "Fuzzing").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
# Executions per harness: all four together take about 20 s on the 2-core reference machine.
RUNS = {"hardened_xml": 60_000, "messages": 100_000, "replica_file": 20_000, "bulk_query": 25_000}
DICTIONARIES = {
    "hardened_xml": "xml.dict",
    "messages": "xml.dict",
    "replica_file": "xml.dict",
    "bulk_query": "csv.dict",
}


def fuzz(harness: str, scratch: Path) -> None:
    """Run a harness for ``RUNS[harness]`` executions; fail with its report on a finding."""
    corpus = scratch / "corpus"
    corpus.mkdir()
    command = [
        sys.executable,
        str(FUZZ / f"{harness}.py"),
        f"-runs={RUNS[harness]}",
        "-seed=1",
        "-timeout=30",
        "-print_final_stats=1",
        f"-dict={FUZZ / DICTIONARIES[harness]}",
        f"-artifact_prefix={scratch}/",
        str(corpus),
        str(FUZZ / "corpus" / harness),
    ]
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=300
    )
    report = (finished.stdout + finished.stderr)[-6000:]
    assert finished.returncode == 0, f"{harness} found something:\n{report}"
    assert f"Done {RUNS[harness]} runs" in finished.stderr, report


def test_hardened_parser_survives_a_short_fuzzing_run(tmp_path: Path) -> None:
    """The hardened parser answers every input of a short fuzzing run with a document or a
    coded error, and keeps its promises about the documents it accepts."""
    fuzz("hardened_xml", tmp_path)


def test_message_decoders_survive_a_short_fuzzing_run(tmp_path: Path) -> None:
    """Every message decoder answers every input of a short fuzzing run with a message that
    round-trips or a coded error."""
    fuzz("messages", tmp_path)


def test_replica_file_reader_survives_a_short_fuzzing_run(tmp_path: Path) -> None:
    """The 副本 file reader answers every input of a short fuzzing run with entries or coded
    errors, and a result file that conforms to its schema."""
    fuzz("replica_file", tmp_path)


def test_bulk_query_reader_survives_a_short_fuzzing_run(tmp_path: Path) -> None:
    """The bulk-query CSV reader answers every input of a short fuzzing run with lines (each a
    query or a refusal) or a coded error, and writes their result lines."""
    fuzz("bulk_query", tmp_path)
