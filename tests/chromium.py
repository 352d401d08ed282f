"""Test helper for the browser tests: a box under twistd in a subprocess, and Debian's
chromium headless through Playwright's sync API (which cannot share the reactor's process:
the browser tests run in a pytest process of their own, started by one test of the main run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from middleware.config import Config

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent
NO_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (make test installs it)"
)


def run_in_own_process(test_file: str, variable: str, passed: int) -> None:
    """Run ``test_file`` in a pytest process of its own, with ``variable`` set to 1 (its
    browser tests run only there); all ``passed`` of them pass."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
        env={**os.environ, variable: "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert f"{passed} passed" in done.stdout, done.stdout[-2000:]


@contextmanager
def twistd_box(config: Config, ready_within: float = 90) -> Iterator[Path]:
    """``renkei pki init`` and ``twistd renkei`` (supervised) on ``config``, running until
    the context ends; its log."""
    made = subprocess.run(
        [str(BIN / "renkei"), "pki", "init", str(config.pki), "-c", str(config.path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    log = config.path.parent / "twistd.log"
    process = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "-l", str(log), "renkei", "-c", str(config.path)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + ready_within
        while "renkei ready" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, log.read_text() if log.exists() else "twistd exited"
            assert time.monotonic() < deadline, "the box did not start"
            time.sleep(0.1)
        yield log
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, launched through Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()
