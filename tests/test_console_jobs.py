"""The console's ジョブ状況 page (バッチの状況管理) and its banner of what is failing
(稼働状態の通知), against a real box whose network clock is frozen and moved."""

from __future__ import annotations

import re
from typing import Any

import pytest_twisted

from adapters.console.app import japan_time
from tests.test_console import add_users, logged_in


def row_of(body: str, job: str) -> str:
    """The ジョブ状況 table's row of ``job``."""
    found = re.search(rf'<tr id="job-{job}".*?</tr>', body, re.S)
    assert found is not None, job
    return found.group(0)


@pytest_twisted.ensureDeferred
async def test_the_jobs_page_shows_each_job_in_japan_time_with_its_failures(box: Any) -> None:
    """An operator sees every job of the node: its state, last run (Japan time), outcome,
    counts and next run; a job whose run failed is failing, with its error among the recent
    failures; in English the times say JST."""
    box.clock.freeze()
    meguro = box.nodes["meguro"]
    await add_users(meguro)

    def nightly() -> None:
        raise RuntimeError("the backup disk is full")

    meguro.jobs.add("nightly", 3600, nightly, now=False)
    failed = await meguro.jobs.run("nightly")
    swept = await meguro.jobs.run("purge")
    browser = await logged_in(box, "op", None)
    code, body, _ = await browser.get("/jobs")
    assert code == 200
    assert "<h1>ジョブ状況</h1>" in body and 'href="/jobs"' in body
    for job in ("outbox", "list_sync", "purge", "held_expiry", "health", "metrics"):
        row_of(body, job)
    purge = row_of(body, "purge")
    assert "保管期限切れ情報の削除" in purge and "正常" in purge
    assert japan_time(swept.started_at) in purge
    assert "成功" in purge and "削除した照会結果: 0" in purge
    assert "削除した情報提供等記録: 0" in purge and "削除した監査ログ: 0" in purge
    assert japan_time(meguro.jobs.state("purge").next_run_at) in purge
    nightly_row = row_of(body, "nightly")
    assert "失敗中" in nightly_row and "RuntimeError: the backup disk is full" in nightly_row
    failures = body.split('id="job-failures"')[1]
    assert japan_time(failed.ended_at) in failures and "the backup disk is full" in failures

    code, body, _ = await browser.get("/jobs?lang=en")
    assert japan_time(swept.started_at, "en") in row_of(body, "purge")
    assert japan_time(swept.started_at, "en").endswith(" JST")


@pytest_twisted.ensureDeferred
async def test_what_is_failing_shows_as_a_banner_on_every_page_until_it_ends(box: Any) -> None:
    """While the hub cannot be reached, every page shows it in a banner, with when it
    started in Japan time; once the hub is back and the node has looked again, it is gone."""
    box.clock.freeze()
    meguro = box.nodes["meguro"]
    await add_users(meguro)
    browser = await logged_in(box, "au", None)
    code, body, _ = await browser.get("/")
    assert code == 200 and "health-banner" not in body

    await box.stop_party("hub")
    await meguro.jobs.run("list_sync")
    await meguro.jobs.run("health")
    (problem,) = meguro.health.failing
    for path in ("/", "/permitted-list", "/audit"):
        code, body, _ = await browser.get(path)
        banner = body.split('id="health-banner"')[1].split("</div>")[0]
        assert "情報提供ネットワークシステムに接続できません" in banner, path
        assert "[重大]" in banner and japan_time(problem.since) in banner

    await box.start_party("hub")
    await meguro.jobs.run("list_sync")
    await meguro.jobs.run("health")
    code, body, _ = await browser.get("/")
    assert "health-banner" not in body
