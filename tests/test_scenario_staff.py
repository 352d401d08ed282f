"""Staff in scenarios (renkei/scenarios/staff.py, simulators/console_browser.py): staff actors'
user names, their authenticator's codes, a console step that does not see what it expects
failing in words, and the audit log's hash chain among the always-on checks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_twisted

from middleware import staff
from middleware.config import load_config
from renkei.scenarios.loading import load_scenario
from renkei.scenarios.staff import staff_user_name
from simulators.console_browser import Authenticator, NoFreshCode

SECRET = staff.new_totp_secret()
NOW = datetime(2027, 4, 1, 0, 0, 10, tzinfo=UTC)

SCENARIO = """\
name: staff-in-a-test
purpose: An approver opens a held provision that does not exist.
actors:
  setagaya-approver: {kind: staff, party: setagaya, roles: [approver]}
steps:
  - console: {as: setagaya-approver, open: /held/99999999999999999999, refused: %s}
  - expect:
      audit:
        setagaya:
          - {action: login, actor: setagaya-approver}
"""


def test_a_staff_actors_user_name_is_its_name_made_fit_for_a_user_name() -> None:
    """Capitals, spaces and a leading digit become a valid user name; the run's suffix is
    kept whole within the 64 characters a user name may have."""
    assert staff_user_name("setagaya-approver") == "setagaya-approver"
    assert staff_user_name("Setagaya Approver") == "setagaya-approver"
    assert staff_user_name("2nd approver", ".k3f9qz") == "s2nd-approver.k3f9qz"
    long = staff_user_name("a" * 80, ".k3f9qz")
    assert len(long) == 64 and long.endswith(".k3f9qz")
    for name in ("Setagaya Approver", "2nd approver", "a" * 80):
        staff.check_name(staff_user_name(name, ".k3f9qz"))


def test_the_authenticator_gives_a_code_the_console_has_not_accepted() -> None:
    """The code of the time first; once it logged in, the next time step's (as a person
    waiting a few seconds), then none (`NoFreshCode`) until the clock moves on; a wrong code
    is none the console would accept."""
    authenticator = Authenticator(SECRET)
    assert authenticator.code(NOW) == staff.totp_code(SECRET, NOW)
    assert authenticator.code(NOW) == staff.totp_code(SECRET, NOW)  # not used: the same
    authenticator.accepted()
    following = authenticator.code(NOW)
    assert following == staff.totp_code(SECRET, NOW + timedelta(seconds=30))
    assert staff.match_totp(SECRET, following, NOW, staff.totp_counter(NOW)) is not None
    authenticator.accepted()
    with pytest.raises(NoFreshCode):
        authenticator.code(NOW)
    assert authenticator.code(NOW + timedelta(minutes=1)) == staff.totp_code(
        SECRET, NOW + timedelta(minutes=1)
    )
    wrong = authenticator.wrong_code(NOW)
    assert len(wrong) == 6 and staff.match_totp(SECRET, wrong, NOW, None) is None


@pytest_twisted.ensureDeferred
async def test_a_console_step_seeing_another_code_fails_in_words(tmp_path: Path) -> None:
    """The page shows UnknownHeldProvision where the step expects RoleForbidden: the
    scenario fails at that step, saying both."""
    from twisted.internet import reactor

    from renkei.scenarios.runner import ScenarioRunner

    path = tmp_path / "staff.yaml"
    path.write_text(SCENARIO % "RoleForbidden", encoding="utf-8")
    outcome = await ScenarioRunner(reactor, tmp_path / "run").run(load_scenario(path))
    assert outcome.failure is not None
    assert outcome.failure.startswith("step 1 (console, line 6): open /held/99999999999999999999")
    assert "the page shows UnknownHeldProvision, expected RoleForbidden" in outcome.failure


@pytest_twisted.ensureDeferred
async def test_an_edited_audit_entry_breaks_the_always_on_checks(tmp_path: Path) -> None:
    """A scenario whose staff did what it expects passes, its audit entries as it says; an
    entry of Setagaya's audit log edited afterwards is found by the always-on check of the
    hash chains."""
    from twisted.internet import reactor

    from renkei.scenarios import validators
    from renkei.scenarios.runner import ScenarioRunner

    path = tmp_path / "staff.yaml"
    path.write_text(SCENARIO % "UnknownHeldProvision", encoding="utf-8")
    outcome = await ScenarioRunner(reactor, tmp_path / "run").run(load_scenario(path))
    assert outcome.passed, outcome.failure
    assert "setagaya audited 1" in outcome.steps[-1].detail
    config = load_config(tmp_path / "run" / "staff-in-a-test" / "network.conf")
    assert await validators.broken_chains(reactor, config) == []
    database = config.institution("setagaya").database.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        edited = connection.execute(
            "UPDATE audit_record SET actor = 'someone-else' WHERE action = 'login'"
        ).rowcount
    assert edited == 1
    assert await validators.broken_chains(reactor, config) == ["setagaya (audit log)"]
