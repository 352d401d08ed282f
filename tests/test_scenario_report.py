"""The scenario report (renkei/scenarios/reports.py): what a person reads, checked in
Chromium — the verdicts, the sequence diagram with the injected faults on their arrows, and
each message viewable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_box_process import run

REPOSITORY = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")

# Playwright's sync API runs in a process of its own (pytest-twisted's reactor shares this one).
BROWSER_SCRIPT = """
import json, sys
from playwright.sync_api import sync_playwright

with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=sys.argv[2], args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page()
    page.goto("file://" + sys.argv[1])
    seen = {
        "title": page.title(),
        "summary": page.inner_text("#summary"),
        "lanes": page.locator("svg.sequence text.lane-name").all_text_contents(),
        "faults": page.locator("svg.sequence text.fault").all_text_contents(),
        "steps": page.locator("table.steps tr").count(),
        "scripts": page.locator("script").count(),
    }
    page.locator("section.scenario details > summary").first.click()
    page.locator("ol.messages details > summary").first.click()
    seen["message"] = page.locator("ol.messages pre").first.inner_text()
    browser.close()
print(json.dumps(seen, ensure_ascii=False))
"""


def test_the_report_shows_verdicts_a_sequence_diagram_and_the_messages(tmp_path: Path) -> None:
    """A scenario whose provision is dropped twice: its report says it passed, draws the
    lanes of the back office, Meguro, the hub and Setagaya, marks the two dropped attempts
    with their fault, and shows each message as sent; no script in the page."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (make test installs it)")
    pytest.importorskip("playwright.sync_api")
    report = tmp_path / "report"
    scenario = REPOSITORY / "scenarios" / "dropped-provision-sent-again.yaml"
    done = run("renkei", "scenario", "run", str(scenario), "--report", str(report),
               "--runs-dir", str(tmp_path / "runs"), timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run(
        [sys.executable, "-c", BROWSER_SCRIPT, str(report / "index.html"), str(CHROMIUM)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    seen = json.loads(shown.stdout)
    assert "1 / 1" in seen["title"] and "1 / 1 合格" in seen["summary"]
    assert seen["lanes"] == ["meguro-care", "meguro", "hub", "setagaya"]
    assert len(seen["faults"]) == 2 and all("f1 drop" in text for text in seen["faults"])
    assert seen["steps"] == 1 + 4  # the header and the four steps
    assert seen["scripts"] == 0
    assert seen["message"].startswith("<?xml") and "QueryRequest" in seen["message"]
