"""The network in a box as a user runs it: `renkei pki init`, `twistd renkei`, `renkei demo`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.network import write_config

BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_box(directory: Path) -> tuple[Any, Path, subprocess.Popen[bytes]]:
    """A test PKI and configuration in ``directory`` and ``twistd renkei`` started on them
    (supervised parties); its configuration, log and process."""
    pki = directory / "pki"
    config = write_config(directory, pki)
    made = run("renkei", "pki", "init", str(pki), "-c", str(config.path))
    assert made.returncode == 0, made.stderr
    log = directory / "twistd.log"
    box = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "-l", str(log), "renkei", "-c", str(config.path)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return config, log, box


def wait_for_log(log: Path, box: subprocess.Popen[bytes], text: str, timeout: float = 90) -> None:
    """Wait until ``text`` is in the box's log (the box must not exit meanwhile)."""
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert box.poll() is None, log.read_text() if log.exists() else "twistd exited"
        assert time.monotonic() < deadline, f"not logged: {text}"
        time.sleep(0.1)


def test_twistd_plugin_describes_its_options() -> None:
    """`twistd renkei --help` shows the -c option and its default file."""
    result = run("twistd", "renkei", "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    assert "twistd.conf" in result.stdout


def test_twistd_refuses_an_unreadable_configuration(tmp_path: Path) -> None:
    """A missing configuration file is a usage error naming the file."""
    result = run("twistd", "-n", "renkei", "-c", str(tmp_path / "missing.conf"))
    assert result.returncode != 0
    assert "missing.conf" in result.stdout + result.stderr


def test_demo_against_a_running_box_prints_the_provision_and_records(tmp_path: Path) -> None:
    """With the box running under twistd (every party in a process of its own, supervised),
    `renkei demo` prints the decrypted provision with item names, its 処理通番 and the three
    parties' records, and exits 0."""
    config, log, box = start_box(tmp_path)
    try:
        wait_for_log(log, box, "renkei ready")
        for party in ("hub", "meguro", "setagaya"):
            assert (
                "demo population registered"
                in (tmp_path / "var" / "log" / f"{party}.log").read_text()
            )
        demo = run("renkei", "demo", "-c", str(config.path))
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "state: provided" in demo.stdout
        assert "処理通番 (transaction number): " in demo.stdout
        assert "特定個人情報名: TM00000000000002 地方税関係情報" in demo.stdout
        assert "市町村民税所得割額: 84200" in demo.stdout
        for party in ("[hub]", "[目黒区]", "[世田谷区]"):
            assert party in demo.stdout
        verified = run("renkei", "records", "verify", "-c", str(config.path))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.count("chain intact") == 3
    finally:
        box.terminate()
        box.wait(timeout=30)
    # The parties' logs: Japan time, the query as business events, no per-connection noise.
    number = demo.stdout.split("処理通番 (transaction number): ")[1].split()[0]
    for party, event in (
        ("hub", "query 目黒区 → 世田谷区 permitted"),
        ("meguro", "to 世田谷区 provided"),
        ("setagaya", "provision to 目黒区 given"),
    ):
        lines = (tmp_path / "var" / "log" / f"{party}.log").read_text().splitlines()
        assert all(line[19:24] == "+0900" for line in lines if line[:2] == "20"), lines[0]
        assert any(f"処理通番 {number}: " in line and event in line for line in lines), party
        assert not [line for line in lines if "Starting factory" in line], party


def test_each_party_runs_alone_in_a_process_of_its_own(tmp_path: Path) -> None:
    """`twistd renkei --party hub`, `--party meguro` and `--party setagaya`, started in the
    opposite order in three processes with a log each, make one network: `renkei demo` gets
    the provision and every party's records."""
    pki = tmp_path / "pki"
    config = write_config(tmp_path, pki)
    made = run("renkei", "pki", "init", str(pki), "-c", str(config.path))
    assert made.returncode == 0, made.stderr
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = {party: tmp_path / f"{party}.log" for party in ("setagaya", "meguro", "hub")}
    try:
        for party, log in logs.items():  # the nodes first: they wait for their hub
            processes[party] = subprocess.Popen(
                [
                    *(str(BIN / "twistd"), "-n", "--pidfile=", "-l", str(log)),
                    *("renkei", "-c", str(config.path), "--party", party),
                ],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 90
        for party, log in logs.items():
            # Ready: the demo population registered and, at a node, a list in force.
            while "renkei ready" not in (log.read_text() if log.exists() else ""):
                assert processes[party].poll() is None, log.read_text() if log.exists() else party
                assert time.monotonic() < deadline, f"{party} did not start"
                time.sleep(0.1)
        demo = run("renkei", "demo", "-c", str(config.path))
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "state: provided" in demo.stdout
        for party in ("[hub]", "[目黒区]", "[世田谷区]"):
            assert party in demo.stdout
        meguro_log = logs["meguro"].read_text()  # each party logs only its own
        assert "[setagaya#" not in meguro_log
        assert "世田谷区 (1131121000000000) ready" not in meguro_log
        assert "[meguro#info] 処理通番 " in meguro_log  # Meguro's query, naming 世田谷区
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)


def test_an_unknown_party_is_a_usage_error(tmp_path: Path) -> None:
    """`--party` names the hub or an institution of the configuration, else a usage error."""
    config = write_config(tmp_path, tmp_path / "pki")
    result = run("twistd", "-n", "renkei", "-c", str(config.path), "--party", "nerima")
    assert result.returncode != 0
    assert "no such party" in result.stdout + result.stderr


def _pids(log: Path, party: str) -> list[int]:
    """The pids the supervisor started ``party`` with, in order."""
    return [int(pid) for pid in re.findall(rf"started {party} \(pid (\d+)\)", log.read_text())]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_party_is_started_again_and_stopping_the_box_stops_every_party(
    tmp_path: Path,
) -> None:
    """SIGKILL to Setagaya's process: the supervisor logs its end, starts it again and logs it
    ready again, and the network answers a query; stopping the box ends every party."""
    config, log, box = start_box(tmp_path)

    def wait_for(text: str) -> None:
        wait_for_log(log, box, text)

    try:
        wait_for("renkei ready")
        (first,) = _pids(log, "setagaya")
        os.kill(first, signal.SIGKILL)
        wait_for("setagaya ended")
        wait_for("setagaya ready again")
        second = _pids(log, "setagaya")[-1]
        assert second != first and _alive(second)
        demo = run("renkei", "demo", "-c", str(config.path))
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "state: provided" in demo.stdout
        children = [_pids(log, party)[-1] for party in ("hub", "meguro", "setagaya")]
    finally:
        box.terminate()
        box.wait(timeout=30)
    assert not [pid for pid in children if _alive(pid)]


def test_commands_against_a_box_that_is_not_running_say_so_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`renkei demo` and `renkei populate` with no box running end with status 1 and one
    line saying the network did not answer, not a traceback."""
    pki = tmp_path / "pki"
    config = write_config(tmp_path, pki)
    made = run("renkei", "pki", "init", str(pki), "-c", str(config.path))
    assert made.returncode == 0, made.stderr
    for command in (("demo",), ("populate", "--size", "10")):
        result = run("renkei", *command, "-c", str(config.path))
        assert result.returncode == 1, command
        assert "did not answer" in result.stderr, result.stderr
        assert "Traceback" not in result.stdout + result.stderr, command
