"""The network in a box as a user runs it: `renkei pki init`, `twistd renkei`, `renkei demo`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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
    """With the box running under twistd, `renkei demo` prints the decrypted provision with
    item names, its 処理通番 and the three parties' records, and exits 0."""
    pki = tmp_path / "pki"
    config = write_config(tmp_path, pki)
    made = run("renkei", "pki", "init", str(pki), "-c", str(config.path))
    assert made.returncode == 0, made.stderr
    log = tmp_path / "twistd.log"
    box = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "-l", str(log), "renkei", "-c", str(config.path)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while "demo population registered" not in (log.read_text() if log.exists() else ""):
            assert box.poll() is None, log.read_text() if log.exists() else "twistd exited"
            assert time.monotonic() < deadline, "the box did not start"
            time.sleep(0.1)
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
