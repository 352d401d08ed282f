"""マイナポータル's pages in a real browser: Playwright driving Debian's chromium headless.

The box runs under twistd in a subprocess, supervised (the portal a process of its own, as
after `make run`); a person signs in as 目黒 花子 by clicking her card, asks Meguro for her
own information and reads it, sees who asked about her and reads a notice Meguro sent her.
The back offices' side is driven with small client scripts. As for the console's browser
tests, Playwright's sync API cannot share the reactor's process: the tests run in a pytest
of their own, started by the one test the main run collects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import NO_CHROMIUM, chromium, run_in_own_process, twistd_box
from tests.network import (
    CARE_INFORMATION,
    HANAKO_MEGURO,
    MEGURO,
    portal_sections,
    write_config,
)

IN_OWN_PROCESS = os.environ.get("RENKEI_PORTAL_BROWSER_TESTS") == "1"
browser_test = pytest.mark.skipif(
    not IN_OWN_PROCESS, reason="run by test_portal_browser_tests_in_their_own_process"
)


@NO_CHROMIUM
@pytest.mark.skipif(IN_OWN_PROCESS, reason="this is the process")
def test_portal_browser_tests_in_their_own_process() -> None:
    """The Playwright tests below pass when run in a pytest process of their own."""
    run_in_own_process(__file__, "RENKEI_PORTAL_BROWSER_TESTS", passed=3)


CLIENT_SCRIPT = """
import json, sys
from pathlib import Path
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from middleware.config import load_config
from simulators.back_office import BackOfficeClient

async def main(reactor, path, action, argument):
    config = load_config(Path(path))
    client = BackOfficeClient(reactor, config, config.institution("meguro"), "care-insurance")
    try:
        if action == "notice":
            print(json.dumps(await client.request("POST", "/notices", json.loads(argument))))
        elif action == "notice-status":
            print(json.dumps(await client.request("GET", "/notices/" + argument)))
        else:
            submitted = await client.submit_query(**json.loads(argument))
            print(json.dumps(await client.wait_for_result(submitted["query_id"])))
    finally:
        await client.close()

react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:])))
"""


class RunningBox:
    """The box under twistd: the portal's address and Meguro's back office."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.url = config.portal.web_address

    def client(self, action: str, argument: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, str(self.config.path), action, argument],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def running_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    directory = tmp_path_factory.mktemp("portal-box")
    config = write_config(
        directory,
        directory / "pki",
        sections=portal_sections(directory),
        notice_status_interval=0.5,
    )
    with twistd_box(config) as log:
        assert "started portal" in log.read_text()
        yield RunningBox(config)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(ignore_https_errors=True, locale="ja-JP")
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Any, box: RunningBox, name: str) -> None:
    """Open the portal and sign in with the card of the demo resident ``name``."""
    page.goto(box.url + "/")
    assert "ログイン" in page.content()
    page.click(f'button.sign-in[data-name="{name}"]')
    page.wait_for_selector("#person")


@NO_CHROMIUM
@browser_test
def test_a_person_signs_in_and_reads_their_own_care_insurance_information(
    running_box: RunningBox, page: Any, tmp_path: Path
) -> None:
    """目黒 花子 clicks her card, asks Meguro for her care-insurance information from the menu
    and, once the page has reloaded itself, reads it with its items named in Japanese."""
    sign_in(page, running_box, "目黒 花子")
    assert "目黒 花子 さんのマイナポータル" in page.content()
    page.click("#menu-self-information")
    page.select_option("#asked", f"{MEGURO}:{CARE_INFORMATION}")
    page.click("#ask-button")
    page.wait_for_selector('#state[data-state="provided"]', timeout=30_000)
    content = page.content()
    assert "被保険者番号" in content and "0001310501" in content
    assert "要介護状態区分" in content and "区分支給限度基準額" not in content
    page.screenshot(path=str(tmp_path / "self-information.png"), full_page=True)


@NO_CHROMIUM
@browser_test
def test_a_person_sees_in_japan_time_who_asked_about_them(
    running_box: RunningBox, page: Any
) -> None:
    """After Meguro asks Setagaya for 花子's local tax, her records page shows it (the hub's
    record and Meguro's) with the institutions and the information by name."""
    status = running_box.client(
        "query",
        json.dumps(
            {
                "integrated_address_number": HANAKO_MEGURO,
                "procedure": "JT90010000000001",
                "information_name": "TM00000000000002",
                "provider": "1131121000000000",
            }
        ),
    )
    assert status["state"] == "provided", status
    sign_in(page, running_box, "目黒 花子")
    page.click("#menu-records")
    number = status["transaction_number"]
    hub_rows = page.locator(f'section[data-party="hub"] tr[data-transaction="{number}"]')
    meguro_rows = page.locator(f'section[data-party="{MEGURO}"] tr[data-transaction="{number}"]')
    assert hub_rows.count() >= 2 and meguro_rows.count() >= 2
    text = hub_rows.first.inner_text()
    assert "目黒区" in text and "世田谷区" in text and "地方税関係情報" in text
    assert "年" in text and "月" in text  # 2026年12月7日 12:00:00: Japan time


@NO_CHROMIUM
@browser_test
def test_a_person_reads_a_notice_and_the_sender_sees_it_read(
    running_box: RunningBox, page: Any
) -> None:
    """Meguro sends 花子 a notice; her menu counts it unread, she opens it and reads it, and
    Meguro's back office sees it 既読 (read) after its next お知らせ状況確認."""
    sign_in(page, running_box, "目黒 花子")
    sent = running_box.client(
        "notice",
        json.dumps(
            {
                "title": "要介護認定の結果のお知らせ",
                "body": "要介護認定の結果をお知らせします。\n要介護2と認定されました。",
                "recipients": [HANAKO_MEGURO],
            }
        ),
    )
    deadline = time.monotonic() + 30
    while "未読" not in page.content():
        assert time.monotonic() < deadline, page.content()
        time.sleep(0.3)
        page.goto(running_box.url + "/")
    page.click("#menu-notices")
    page.click("text=要介護認定の結果のお知らせ")
    assert "要介護2と認定されました。" in page.locator("#body").inner_text()
    deadline = time.monotonic() + 30
    while True:
        status = running_box.client("notice-status", sent["notice_id"])
        if status["recipients"][0]["state"] == "read":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    page.goto(running_box.url + "/notices")
    assert page.locator('tr[data-read="yes"]').count() == 1
