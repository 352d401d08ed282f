"""The scenario runner (renkei/scenarios/, docs/scenarios.md): the library passes, a bad file
is refused with its file and line, a failing expectation fails its scenario in words."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from renkei.scenarios.loading import ScenarioInvalid, load_scenario, load_scenarios
from tests.test_box_process import run

REPOSITORY = Path(__file__).resolve().parent.parent
LIBRARY = REPOSITORY / "scenarios"

GOOD = """\
name: a-small-one
purpose: Meguro asks Setagaya for a person's local tax.
actors:
  meguro-care: {kind: back_office, party: meguro, system: care-insurance}
steps:
  - query:
      as: meguro-care
      person: "000000000010001"
      procedure: JT90010000000001
      information_name: TM00000000000002
      provider: setagaya
      capture: asked
  - wait: {query: asked, state: provided}
  - expect:
      query: asked
      records:
        SET-TAX-2026-0001: {TK00000201010004: "%s"}
"""


def test_the_library_passes_and_is_reported_in_junit(tmp_path: Path) -> None:
    """`renkei scenario run` runs every scenario of scenarios/, each in a network of its own;
    all pass but those with a system under test, which are skipped saying which --sut they
    need (test_the_systems_under_test_pass_bound_to_the_examples runs them); exit 0, and
    the JUnit file has one test case per scenario."""
    junit = tmp_path / "junit.xml"
    runs = tmp_path / "runs"
    result = run(
        "renkei", "scenario", "run", "--junit", str(junit), "--runs-dir", str(runs), timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    scenarios = load_scenarios([LIBRARY])
    with_sut = [s for s in scenarios if any(a.get("role") == "sut" for a in s.actors.values())]
    count, ran = len(scenarios), len(scenarios) - len(with_sut)
    assert f"{ran} of {ran} scenarios passed ({len(with_sut)} skipped" in result.stdout
    for scenario in with_sut:
        assert f"skipped {scenario.name}: a system under test is not bound: needs --sut" in (
            result.stdout
        )
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == str(count) and suite.get("failures") == "0"
    assert suite.get("skipped") == str(len(with_sut))
    assert len(suite.findall("testcase")) == count


def test_a_failing_expectation_fails_its_scenario_in_words(tmp_path: Path) -> None:
    """An item value that is not the one provided: the scenario fails at that step, says
    what was expected and seen, the JUnit case carries it, and the exit status is 1."""
    path = tmp_path / "wrong.yaml"
    path.write_text(GOOD % "99999", encoding="utf-8")
    junit = tmp_path / "junit.xml"
    runs = tmp_path / "runs"
    result = run("renkei", "scenario", "run", str(path), "--junit", str(junit),
                 "--runs-dir", str(runs), timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert "FAILED a-small-one" in result.stdout
    assert "step 3 (expect, line 14)" in result.stdout
    assert "item TK00000201010004 is '84200', expected '99999'" in result.stdout
    failure = ElementTree.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and "expected '99999'" in (failure.get("message") or "")
    # The run was kept: its reports are made again from it, the same verdict in them.
    (kept,) = runs.iterdir()
    again = run("renkei", "scenario", "report", str(kept), "--report", str(tmp_path / "html"),
                "--junit", str(tmp_path / "again.xml"))  # fmt: skip
    assert again.returncode == 0 and "1 scenarios, 1 failed" in again.stdout
    assert (tmp_path / "again.xml").read_bytes() == junit.read_bytes()
    assert "expected &#39;99999&#39;" in (tmp_path / "html" / "index.html").read_text()


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        (GOOD.replace("capture: asked\n", "capture: 7\n"), 12, "steps[0].query.capture"),
        (GOOD.replace("state: provided}", "}"), 13, "'state' is a required property"),
        (GOOD.replace("  - wait:", "  - hover:"), 13, "steps[1]"),
        (GOOD.replace("name: a-small-one", "name: A Small One"), 1, "name"),
        ("name: [unclosed\n", 2, "not YAML"),
    ],
)
def test_a_bad_scenario_is_refused_with_its_file_and_line(
    tmp_path: Path, text: str, line: int, what: str
) -> None:
    """A scenario that is not one: ScenarioInvalid names the file, the line and what is
    wrong; `renkei scenario validate` prints it and exits 1."""
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("%s", "1"), encoding="utf-8")
    with pytest.raises(ScenarioInvalid) as refused:
        load_scenario(path)
    assert refused.value.line == line, refused.value
    assert what in refused.value.what
    checked = run("renkei", "scenario", "validate", str(path))
    assert checked.returncode == 1 and f"{path}:{line}:" in checked.stderr


def test_the_library_is_valid_and_listed() -> None:
    """Every file of scenarios/ is valid, names are unique, and `renkei scenario list` shows
    each with its purpose."""
    scenarios = load_scenarios([LIBRARY])
    assert len(scenarios) >= 18
    listed = run("renkei", "scenario", "list")
    assert listed.returncode == 0
    for scenario in scenarios:
        assert scenario.name in listed.stdout


def _codes_in_steps(scenario: Any) -> set[str]:
    """Every string of a scenario's steps (the codes it must be refused or end with)."""

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in node.items():
                yield from strings(key)
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    return set(strings(list(scenario.steps)))


def test_every_coded_refusal_is_provoked_by_a_scenario_or_said_why() -> None:
    """Every code of docs/protocol.md §12 is in docs/scenarios.md: in the table of codes with
    scenarios whose steps name it (each of them does), or among the codes no scenario
    provokes, with why; none is in both, none is left out."""
    import re

    protocol = (REPOSITORY / "docs" / "protocol.md").read_text(encoding="utf-8")
    codes = re.findall(
        r"^\| `([A-Za-z]+)` \|", protocol.split("## 12.")[1].split("## 13.")[0], re.M
    )
    guide = (REPOSITORY / "docs" / "scenarios.md").read_text(encoding="utf-8")
    part = guide.split("## Every coded refusal")[1].split("\n## ")[0]
    provoked_table, not_provoked_table = part.split("Not provoked by a scenario")
    provoked = {
        code: re.findall(r"`([a-z0-9-]+)`", names)
        for code, names in re.findall(r"^\| `([A-Za-z]+)` \| (.+) \|$", provoked_table, re.M)
    }
    not_provoked = {
        code
        for first in re.findall(r"^\| (`[A-Za-z]+`(?:, `[A-Za-z]+`)*) \|", not_provoked_table, re.M)
        for code in re.findall(r"`([A-Za-z]+)`", first)
    }
    library = {scenario.name: scenario for scenario in load_scenarios([LIBRARY])}
    assert set(codes) == set(provoked) | not_provoked, set(codes) ^ (set(provoked) | not_provoked)
    assert not set(provoked) & not_provoked
    for code, names in provoked.items():
        assert names, code
        for name in names:
            assert code in _codes_in_steps(library[name]), (code, name)


@pytest_twisted.ensureDeferred
async def test_the_validators_catch_a_payload_that_does_not_open(tmp_path: Path) -> None:
    """The captured messages of a passing run pass the always-on checks; the same messages
    with a provision's payload damaged do not (its requester cannot open it)."""
    from dataclasses import replace

    from twisted.internet import reactor

    from renkei.sandbox import sandbox_config
    from renkei.scenarios import runner, validators

    scenario = load_scenario(LIBRARY / "local-tax-provided-once.yaml")
    outcome = await runner.ScenarioRunner(reactor, tmp_path).run(scenario)
    assert outcome.passed, outcome.failure
    (tmp_path / "again").mkdir()
    config = replace(sandbox_config(tmp_path / "again"), pki=tmp_path / "pki")
    assert validators.cryptography_problems(config, outcome.messages) == []
    provisions = [
        exchange
        for exchange in outcome.messages.exchanges
        if exchange.source == "hub" and exchange.operation == "provision"
    ]
    assert len(provisions) == 1 and provisions[0].request is not None
    provisions[0].request = provisions[0].request.replace(
        b"<EncryptedPayload>", b"<EncryptedPayload>AAAA", 1
    )
    (problem,) = validators.cryptography_problems(config, outcome.messages)
    assert "does not open and verify: PayloadUnreadable" in problem


def test_the_library_runs_against_a_running_network_of_processes(tmp_path: Path) -> None:
    """`renkei scenario run -c CONFIG` runs the whole library against one network in a box
    of processes (the repository's configuration moved into a directory): every scenario it
    can run passes — the clock, parties stopped, started and killed, a party's own
    documents, staff decisions in the consoles and the messages its processes captured
    included — and the others are skipped, saying why (a network made for the scenario, a
    system under test, a population it did not load); afterwards no fault is in force, the
    clock is back at real time, every party runs, every staff user the scenarios made is
    disabled, and the report shows the captured messages."""
    import os
    import subprocess
    import sys

    from middleware.config import load_config
    from renkei.sandbox import sandbox_config, sandbox_pki
    from renkei.supervisor import parties_of
    from tests.test_box_process import wait_for_log

    config = sandbox_config(tmp_path)
    sandbox_pki(config)
    log = tmp_path / "twistd.log"
    twistd = Path(sys.executable).parent / "twistd"
    box = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "-l", str(log), "renkei", "-c", str(config.path),
         "--log-dir", str(tmp_path / "logs")],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        wait_for_log(log, box, "renkei ready", timeout=120)
        junit = tmp_path / "junit.xml"
        done = run("renkei", "scenario", "run", "-c", str(config.path), "--junit", str(junit),
                   "--runs-dir", str(tmp_path / "runs"), "--report", str(tmp_path / "report"),
                   timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        library = {scenario.name: scenario for scenario in load_scenarios([LIBRARY])}
        skipped = {line.split()[1].rstrip(":"): line for line in done.stdout.splitlines()
                   if line.startswith("skipped ")}  # fmt: skip
        for name, line in skipped.items():  # each saying why
            assert name in library and ("needs" in line or "system under test" in line), line
        ran = len(library) - len(skipped)
        assert f"{ran} of {ran} scenarios passed" in done.stdout
        assert ran >= 80
        suite = ElementTree.parse(junit).getroot().find("testsuite")
        assert suite is not None and suite.get("failures") == "0"
        assert suite.get("skipped") == str(len(skipped))
        # What the scenarios changed is put back.
        assert "no fault in force" in run("renkei", "faults", "list", "-c", str(config.path)).stdout
        clock = run("renkei", "clock", "show", "-c", str(config.path)).stdout
        assert ", running, real time" in clock, clock
        parties = run("renkei", "party", "list", "-c", str(config.path)).stdout.splitlines()
        assert [line.split()[0] for line in parties] == parties_of(load_config(config.path))
        assert all(line.split()[1] == "running" for line in parties), parties
        users = run("renkei", "staff", "list", "-c", str(config.path), "-i", "setagaya").stdout
        made = [line for line in users.splitlines() if "-approver." in line]
        assert made and all(line.endswith("disabled") for line in made), users
        # The conversations are the messages the processes captured, documents and all.
        page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
        assert page.count('<svg class="sequence"') >= 50
        assert "&lt;ProvisionRequest" in page and "&lt;QueryRequest" in page
    finally:
        box.terminate()
        box.wait(timeout=30)


# -- systems under test (renkei/scenarios/sut.py) ------------------------------------------

MEMBER = REPOSITORY / "examples" / "outside_member" / "member.py"
PERSONS = REPOSITORY / "examples" / "outside_member" / "persons.json"
VENDOR = REPOSITORY / "examples" / "vendor_back_office" / "back_office.py"


def member_binding(data: Path = PERSONS) -> str:
    """``--sut`` for the example outside member as 練馬区 (nerima-member) with ``data``."""
    return f"nerima-member={sys.executable} {MEMBER} sut --data {data}"


def test_the_systems_under_test_pass_bound_to_the_examples(tmp_path: Path) -> None:
    """The library's scenarios tagged sut, run with --sut bound to the repository's example
    outside member and example vendor back office: each SUT is started with what it needs,
    and every scenario passes, none skipped; the report says what each SUT was told."""
    junit = tmp_path / "junit.xml"
    done = run("renkei", "scenario", "run", "--tag", "sut", "--junit", str(junit),
               "--runs-dir", str(tmp_path / "runs"), "--report", str(tmp_path / "report"),
               "--sut", member_binding(),
               "--sut", f"meguro-vendor={sys.executable} {VENDOR} sut", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sut = [scenario for scenario in load_scenarios([LIBRARY]) if "sut" in scenario.tags]
    assert len(sut) >= 3
    assert f"{len(sut)} of {len(sut)} scenarios passed\n" in done.stdout
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "0" and suite.get("failures") == "0"
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "RENKEI_MEMBER_FOLDER=" in page and "RENKEI_BACK_OFFICE_ADDRESS=" in page


def test_a_system_under_test_that_answers_wrongly_fails_its_scenario(tmp_path: Path) -> None:
    """The example outside member bound with a data file lacking 世田谷 太郎's 2025 local tax:
    Meguro's query to it is provided with one record, not two, and the scenario fails at
    that step, saying so."""
    import json

    data = json.loads(PERSONS.read_text(encoding="utf-8"))
    for person in data["persons"]:
        person["records"] = [r for r in person["records"] if r["record_id"] != "NER-TAX-2025-0002"]
    changed = tmp_path / "persons.json"
    changed.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    done = run("renkei", "scenario", "run", str(LIBRARY / "outside-member-provides-to-meguro.yaml"),
               "--runs-dir", str(tmp_path / "runs"), "--sut", member_binding(changed),
               timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED outside-member-provides-to-meguro" in done.stdout
    assert "1 records provided, expected 2" in done.stdout


def test_a_system_under_test_the_tester_starts_is_told_and_waited_for(tmp_path: Path) -> None:
    """--sut ACTOR without a command: the runner prints what the SUT needs (its node's
    back-office address, its certificate, the queries expected of it) and waits for its
    query within the step's timeout; none comes, and the step fails saying what it waited
    for."""
    path = tmp_path / "waited.yaml"
    path.write_text(
        """\
name: waited-for
purpose: A vendor back office nobody starts is waited for and fails its step.
actors:
  meguro-vendor: {kind: back_office, party: meguro, system: care-insurance, role: sut}
steps:
  - query:
      as: meguro-vendor
      person: "000000000010001"
      procedure: JT90010000000001
      information_name: TM00000000000002
      provider: setagaya
      timeout: 2
""",
        encoding="utf-8",
    )
    done = run("renkei", "scenario", "run", str(path), "--runs-dir", str(tmp_path / "runs"),
               "--sut", "meguro-vendor", timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "start meguro-vendor (a back office, the system under test) now" in done.stdout
    for told in ("RENKEI_BACK_OFFICE_ADDRESS=https://127.0.0.1:", "RENKEI_CLIENT_KEY=",
                 '"integrated_address_number": "000000000010001"'):  # fmt: skip
        assert told in done.stdout
    assert "meguro-vendor (the system under test) did not send its query about " in done.stdout


def test_the_vendor_back_office_imports_nothing_of_the_project() -> None:
    """examples/vendor_back_office/back_office.py uses the standard library and jsonschema
    only: what it knows of its node comes from the OpenAPI document."""
    from tests.test_outside_member import imported_packages

    imported = imported_packages(VENDOR)
    assert imported <= set(sys.stdlib_module_names) | {"jsonschema"}, imported


def test_processes_runs_a_scenario_in_a_network_of_processes_of_its_own(tmp_path: Path) -> None:
    """`renkei scenario run --processes`: the scenario runs in a network whose every party is
    a process of its own, started for it and stopped after; its supervisor's and parties'
    logs stay in its work directory, and the run keeps the messages its processes captured
    (each request and answer as sent)."""
    from renkei.scenarios.runs import read_run

    done = run("renkei", "scenario", "run", str(LIBRARY / "local-tax-provided-once.yaml"),
               "--processes", "--work-dir", str(tmp_path / "work"),
               "--runs-dir", str(tmp_path / "runs"), timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 1 scenarios passed" in done.stdout
    work = tmp_path / "work" / "local-tax-provided-once"
    supervisor = (work / "twistd.log").read_text(encoding="utf-8")
    assert "renkei ready" in supervisor and "Server Shut Down." in supervisor  # and stopped
    assert {path.name for path in (work / "logs").iterdir()} >= {"hub.log", "meguro.log"}
    (kept,) = (tmp_path / "runs").iterdir()
    (outcome,) = read_run(kept)
    sent = [(exchange.operation, exchange.source) for exchange in outcome.messages.exchanges
            if exchange.operation in ("query", "provision_request", "provision")]  # fmt: skip
    assert sent == [
        ("query", "1131105000000000"),
        ("provision_request", "hub"),
        ("provision", "1131121000000000"),
        ("provision", "hub"),
    ]
    assert all(exchange.request and exchange.answer for exchange in outcome.messages.exchanges)
    assert [call["order"] for call in outcome.calls] == [0]  # the back office asked first
