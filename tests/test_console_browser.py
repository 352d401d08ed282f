"""The operator console in a real browser: Playwright driving Debian's chromium headless.

The box runs under twistd in a subprocess (Playwright's sync API cannot run inside the
reactor), staff users are made with the `renkei staff add` CLI against its Meguro database,
and the requester's side is driven and observed with small back-office client scripts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import BIN, NO_CHROMIUM, chromium, run_in_own_process, twistd_box
from tests.network import CARE_INFORMATION, MEGURO, write_config
from tests.test_held import CERTIFICATION, FLAGGED_RECORD, TARO_SETAGAYA

PASSWORD = "browser test password"
IDLE_TIMEOUT = 8.0

# Playwright's sync API and pytest-twisted's reactor greenlet do not mix in one process once
# the reactor has run: the browser tests run in a pytest of their own, started by the one
# test below that the main run collects.
IN_OWN_PROCESS = os.environ.get("RENKEI_BROWSER_TESTS") == "1"
browser_test = pytest.mark.skipif(
    not IN_OWN_PROCESS, reason="run by test_browser_tests_in_their_own_process"
)


@NO_CHROMIUM
@pytest.mark.skipif(IN_OWN_PROCESS, reason="this is the process")
def test_browser_tests_in_their_own_process() -> None:
    """The Playwright tests below pass when run in a pytest process of their own (Playwright's
    sync API cannot share the reactor's process)."""
    run_in_own_process(__file__, "RENKEI_BROWSER_TESTS", passed=8)


CLIENT_SCRIPT = """
import json, sys
from pathlib import Path
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from middleware.config import load_config
from simulators.back_office import BackOfficeClient, BackOfficeError

async def main(reactor, path, action, argument):
    config = load_config(Path(path))
    if action in ("register", "notice"):
        client = BackOfficeClient(reactor, config, config.institution("meguro"), "care-insurance")
    else:
        client = BackOfficeClient(reactor, config, config.institution("setagaya"), "care-insurance")
    try:
        if action == "register":
            try:
                await client.register_replica_record(json.loads(argument))
            except BackOfficeError as refusal:
                if refusal.code != "RecordIdExists":
                    raise
        elif action == "notice":
            print(json.dumps(await client.request("POST", "/notices", json.loads(argument))))
        elif action == "ask":
            print(json.dumps(await client.submit_query(**json.loads(argument))))
        else:
            print(json.dumps(await client.query_status(argument)))
    finally:
        await client.close()

react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:])))
"""


class RunningBox:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.url = config.institution("meguro").console_address

    def client(self, action: str, argument: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, str(self.config.path), action, argument],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    def ask_held(self) -> tuple[str, str]:
        """Setagaya asks for the flagged record; the query id and 処理通番 once held."""
        submitted = self.client(
            "ask",
            json.dumps(
                {
                    "integrated_address_number": TARO_SETAGAYA,
                    "procedure": CERTIFICATION,
                    "information_name": CARE_INFORMATION,
                    "provider": MEGURO,
                }
            ),
        )
        status = self.wait(submitted["query_id"], "held")
        return submitted["query_id"], status["transaction_number"]

    def wait(self, query_id: str, state: str) -> Any:
        deadline = time.monotonic() + 30
        while True:
            status = self.client("status", query_id)
            if status["state"] == state:
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.3)

    def add_staff(self, name: str, roles: str) -> str | None:
        """Add a staff user with the CLI; its TOTP secret, if it has one."""
        done = subprocess.run(
            [
                str(BIN / "renkei"),
                "staff",
                "add",
                name,
                "-c",
                str(self.config.path),
                "--institution",
                "meguro",
                "--roles",
                roles,
                "--password-file",
                str(self.config.path.parent / "password"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        found = re.search(r"TOTP secret: ([A-Z2-7]+)", done.stdout)
        return found.group(1) if found else None


@pytest.fixture(scope="module")
def running_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    directory = tmp_path_factory.mktemp("console-box")
    config = write_config(directory, directory / "pki", console_idle_timeout=IDLE_TIMEOUT)
    (directory / "password").write_text(PASSWORD + "\n", encoding="utf-8")
    with twistd_box(config, ready_within=60):
        box = RunningBox(config)
        box.client("register", json.dumps(FLAGGED_RECORD))
        yield box


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(ignore_https_errors=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def totp(secret: str | None) -> str:
    import pyotp

    return pyotp.TOTP(secret).now() if secret else ""


def log_in(page: Any, box: RunningBox, name: str, secret: str | None, password: str = PASSWORD):
    page.goto(box.url + "/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.fill("#totp", totp(secret))
    page.click("#login")


@NO_CHROMIUM
@browser_test
def test_approver_logs_in_with_totp_and_approves_a_held_provision(
    running_box: RunningBox, page: Any
) -> None:
    """The requester's back office receives the approved provision."""
    secret = running_box.add_staff("approver1", "approver")
    assert secret is not None
    query_id, number = running_box.ask_held()
    log_in(page, running_box, "approver1", secret)
    assert page.url == running_box.url + "/"
    assert "ダッシュボード" in page.content()
    page.click("text=保留一覧")
    page.click(f'a[href="/held/{number}"]')
    assert "要介護状態区分" in page.content()
    assert "MEG-KAIGO-0201-DV01" in page.content()
    page.click("#approve")
    assert page.url.endswith(f"/held/{number}/approve")  # the confirmation page
    assert "MEG-KAIGO-0201-DV01" in page.locator("main").inner_text()
    page.click("#confirm")
    assert "/held?done=approved" in page.url
    assert f"処理通番 {number} を承認しました" in page.locator("#done").inner_text()
    status = running_box.wait(query_id, "provided")
    assert status["result"]["records"][0]["record_id"] == "MEG-KAIGO-0201-DV01"


@NO_CHROMIUM
@browser_test
def test_approver_refuses_and_the_requester_sees_provision_refused(
    running_box: RunningBox, page: Any, tmp_path: Path
) -> None:
    """An approver refuses a held provision with a reason and the requester's back office sees
    ProvisionRefused."""
    secret = running_box.add_staff("approver2", "approver")
    query_id, number = running_box.ask_held()
    log_in(page, running_box, "approver2", secret)
    page.goto(f"{running_box.url}/held/{number}?lang=en")
    assert "Content to be sent" in page.content()
    page.set_viewport_size(SCREEN)
    page.fill("#reason", "DV protection order")
    page.click("#refuse")
    assert page.locator("#confirm-reason").inner_text() == "DV protection order"
    check_page(page, screenshots_directory(tmp_path), "held-confirm-refuse")
    page.click("#confirm")
    assert "refused" in page.locator("#done").inner_text()
    status = running_box.wait(query_id, "refused")
    assert status["error"]["code"] == "ProvisionRefused"
    assert "提供不可" in status["error"]["message_ja"]


@NO_CHROMIUM
@browser_test
def test_operator_is_refused_the_approval_page(running_box: RunningBox, page: Any) -> None:
    """An operator opening a held provision's approval page gets 403."""
    running_box.add_staff("operator1", "operator")
    _, number = running_box.ask_held()
    log_in(page, running_box, "operator1", None)
    page.goto(running_box.url + "/held")
    assert number in page.content()
    response = page.goto(f"{running_box.url}/held/{number}")
    assert response.status == 403
    assert "RoleForbidden" in page.content()


@NO_CHROMIUM
@browser_test
def test_lockout_after_repeated_failures(
    running_box: RunningBox, page: Any, tmp_path: Path
) -> None:
    """Repeated failed logins in the browser lock the account."""
    running_box.add_staff("operator2", "operator")
    for _ in range(5):
        log_in(page, running_box, "operator2", None, password="not the password")
        assert "LoginFailed" in page.content()
    log_in(page, running_box, "operator2", None)
    assert "AccountLocked" in page.content()
    assert page.url.endswith("/login")
    message = page.locator("#error p[lang=ja]").inner_text()
    assert re.search(r"[0-9]{4}年[0-9]{1,2}月[0-9]{1,2}日 [0-9]{2}:[0-9]{2}以降", message), message
    assert " JST" in page.locator("#error p[lang=en]").inner_text()  # Japan time, not UTC
    page.set_viewport_size(SCREEN)
    check_page(page, screenshots_directory(tmp_path), "error-login-locked")


@NO_CHROMIUM
@browser_test
def test_a_form_posted_without_its_csrf_token_is_refused(
    running_box: RunningBox, page: Any
) -> None:
    """A form posted from the browser without its CSRF token is refused."""
    running_box.add_staff("operator3", "operator")
    log_in(page, running_box, "operator3", None)
    assert page.url == running_box.url + "/"
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    with page.expect_response(lambda r: r.url.endswith("/logout")) as posted:
        page.click("#logout")
    assert posted.value.status == 403
    assert "CsrfRejected" in page.content()


@NO_CHROMIUM
@browser_test
def test_session_expires_after_the_idle_timeout(running_box: RunningBox, page: Any) -> None:
    """After the idle timeout the next page asks to log in again."""
    running_box.add_staff("operator4", "operator")
    log_in(page, running_box, "operator4", None)
    assert page.url == running_box.url + "/"
    time.sleep(IDLE_TIMEOUT + 1.5)
    response = page.goto(running_box.url + "/records")
    assert response.status == 401
    assert "SessionExpired" in page.content()
    page.click('main a[href="/login"]')
    assert page.url.endswith("/login")


@NO_CHROMIUM
@browser_test
def test_the_statistics_page_draws_its_charts_and_exports_its_csv(
    running_box: RunningBox, page: Any, tmp_path: Path
) -> None:
    """An auditor opens 業務統計 from the navigation at 1366×768: both sides' tables and SVG
    charts render with no Content-Security-Policy complaint, the held provision shows as a
    bar of the held colour, and the CSV downloads with its BOM."""
    running_box.add_staff("auditor1", "auditor")
    running_box.ask_held()
    page.set_viewport_size({"width": 1366, "height": 768})
    complaints: list[str] = []
    page.on("console", lambda message: complaints.append(message.text))
    log_in(page, running_box, "auditor1", None)
    page.click("nav >> text=業務統計")
    assert page.url.startswith(running_box.url + "/statistics")
    assert page.locator("svg.chart").count() == 2
    held = page.locator("#side-provision svg.chart g rect[fill='#E69F00']")
    assert held.count() >= 1
    bounds = held.first.bounding_box()
    assert bounds is not None and bounds["width"] > 0
    assert "保留中" in page.locator("#side-provision table").inner_text()
    page.screenshot(path=str(tmp_path / "statistics.png"))
    assert (tmp_path / "statistics.png").stat().st_size > 0
    with page.expect_download() as downloaded:
        page.click("#export")
    data = Path(downloaded.value.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and "区分".encode() in data
    assert not [text for text in complaints if "Content Security Policy" in text], complaints


SCREEN = {"width": 1366, "height": 768}


def screenshots_directory(tmp_path: Path) -> Path:
    """Where the every-page test keeps its screenshots: $RENKEI_SCREENSHOTS, else the test's
    pytest tmp directory."""
    named = os.environ.get("RENKEI_SCREENSHOTS")
    directory = Path(named) if named else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def check_page(page: Any, directory: Path, name: str) -> None:
    """The page shown fits a 1366 px wide screen (nothing scrolls sideways), no column of
    its tables is squeezed to a character's width, and its 1366×768 screenshot is kept;
    it shows no coded error unless it is an error page."""
    if not name.startswith("error"):
        assert page.locator("#error").count() == 0, (name, page.locator("main").inner_text())
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= SCREEN["width"], (name, width)
    narrowest = page.evaluate(
        "Math.min(1000, ...Array.from(document.querySelectorAll('main table tr:first-child th'))"
        ".map(th => th.getBoundingClientRect().width))"
    )
    assert narrowest >= 30, (name, narrowest)
    assert page.locator("nav").count() == 1 or "login" in name, name
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 0


@NO_CHROMIUM
@browser_test
def test_every_page_fits_a_1366_screen_with_names_and_japan_time(
    running_box: RunningBox, page: Any, tmp_path: Path
) -> None:
    """A person with every role opens each page of the console at 1366×768: each fits the
    screen, keeps the navigation (error pages too), shows institutions, procedures, states and
    audit actions by name and times in Japan time, and a screenshot of each is kept."""
    directory = screenshots_directory(tmp_path)
    secret = running_box.add_staff("everyone", "operator approver auditor admin")
    page.set_viewport_size(SCREEN)
    page.goto(running_box.url + "/")
    assert page.url == running_box.url + "/login"  # a first visit: the login page
    check_page(page, directory, "login")
    for _ in range(2):  # a page of records and a held provision waiting
        _, number = running_box.ask_held()
    log_in(page, running_box, "everyone", secret)
    assert page.url == running_box.url + "/"
    main = page.locator("main").inner_text()
    assert "本日" in main and "今月" in main and "情報提供ネットワークシステム" in main
    check_page(page, directory, "dashboard")
    page.click("#held_waiting a")
    assert page.url == running_box.url + "/held"
    held = page.locator("#held").inner_text()
    assert "世田谷区" in held and "要介護認定" in held and "時間" in held
    assert "T0" not in held  # no ISO time
    check_page(page, directory, "held")
    page.click(f'a[href="/held/{number}"]')
    why = page.locator("#why").inner_text()
    assert "自動応答不可" in why
    assert "世田谷区" in page.locator("#requester").inner_text()
    assert "介護保険法" in page.locator("#affair").inner_text()
    check_page(page, directory, "held-detail")
    page.click("#approve")
    check_page(page, directory, "held-confirm-approve")
    page.click("#confirm")
    check_page(page, directory, "held-approved")
    page.goto(f"{running_box.url}/held/{number}")
    assert page.locator("#content-withheld").count() == 1
    assert page.locator("#approve").count() == 0
    check_page(page, directory, "held-decided")
    page.click("nav >> text=情報提供等記録")
    records = page.locator("#records").inner_text()
    assert "世田谷区" in records and "要介護認定" in records and "保留中" in records
    assert not re.search(r"(?<![0-9])[0-9]{16}(?![0-9])", records)  # no institution code
    tallest = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('#records tr'))"
        ".slice(1).map(tr => tr.getBoundingClientRect().height))"
    )
    assert tallest <= 40, tallest  # one line a row: 50 rows stay a page of a few screens
    check_page(page, directory, "records")
    page.click(f'#records a[href="/records/{number}"] >> nth=0')
    assert "世田谷区" in page.locator("#timeline").inner_text()
    check_page(page, directory, "record-detail")
    response = page.goto(running_box.url + "/records/99999999999999999999")
    assert response.status == 404 and "UnknownTransaction" in page.content()
    check_page(page, directory, "error-404")
    for unknown, code in (
        ("/records/not-a-number", "UnknownTransaction"),
        ("/held/99999999999999999999", "UnknownHeldProvision"),
        ("/notices/00000000-0000-0000-0000-000000000000", "UnknownNotice"),
        ("/no/such/page", "PageNotFound"),
    ):
        response = page.goto(running_box.url + unknown)
        assert response.status == 404 and code in page.content(), unknown
        assert page.locator("nav").count() == 1, unknown  # the navigation stays
    page.goto(running_box.url + "/persons/000000000010002")
    assert "受給者基本情報" in page.locator("#replica").inner_text()
    check_page(page, directory, "person")
    response = page.goto(running_box.url + "/persons/000000000099999")
    assert response.status == 404
    page.click("nav >> text=照会許可照合リスト")
    rules = page.locator("#rules").inner_text()
    assert "市区町村" in rules and "要介護認定" in rules
    check_page(page, directory, "permitted-list")
    page.click("nav >> text=監査ログ")
    audit = page.locator("#audit").inner_text()
    assert "保留の承認" in audit and "ログイン" in audit and "{" not in audit
    check_page(page, directory, "audit")
    page.click("nav >> text=利用者")
    assert "承認者" in page.locator("#users").inner_text()
    check_page(page, directory, "users")
    page.click("nav >> text=ジョブ状況")
    check_page(page, directory, "jobs")
    running_box.client(
        "notice",
        json.dumps(
            {
                "title": "要介護認定の結果のお知らせ",
                "body": "要介護認定の結果をお知らせします。",
                "recipients": ["000000000010002"],
            }
        ),
    )
    page.click("nav >> text=お知らせ")
    check_page(page, directory, "notices")
    page.click("text=要介護認定の結果のお知らせ")
    assert "000000000010002" in page.locator("#recipients").inner_text()
    check_page(page, directory, "notice-detail")
    page.click("nav >> text=業務統計")
    check_page(page, directory, "statistics")
    page.click("nav >> text=宛名")
    check_page(page, directory, "persons")
    page.goto(running_box.url + "/records?lang=en")
    assert "Long-Term Care Insurance Act" in page.locator("#records").inner_text()
    check_page(page, directory, "records-en")
    with page.expect_download() as downloaded:
        page.goto(running_box.url + "/records?lang=ja")
        page.click("#export")
    exported = Path(downloaded.value.path()).read_text(encoding="utf-8-sig")
    assert "+09:00" in exported and "世田谷区" in exported and "requester_name" in exported
