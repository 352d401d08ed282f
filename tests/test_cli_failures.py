"""The `renkei` command and `twistd renkei` as a new user meets their failures: each expected
one is one line with its code and what to do, and a status that is not 0; anything else
still shows its traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import pytest_twisted
from click.testing import CliRunner

from renkei.failures import CommandGroup, expected
from renkei.sandbox import sandbox_config, sandbox_pki
from tests.network import write_config
from tests.test_box_process import run
from tests.test_populate_cli import renkei as renkei_beside_the_box


def one_line(result: subprocess.CompletedProcess[str], code: str, status: int = 1) -> str:
    """The one line ``result`` ended with (checked: its code, its status, no traceback)."""
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    assert " — " in lines[0], lines[0]  # what to do
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def stopped(tmp_path: Path) -> Any:
    """The configuration of `make run` (its population too) moved into ``tmp_path``, with its
    PKI made and nothing running."""
    config = sandbox_config(tmp_path, population="small")
    sandbox_pki(config)
    return config


def test_every_command_that_reaches_the_box_says_in_one_line_that_it_is_not_running(
    stopped: Any, tmp_path: Path
) -> None:
    """demo, use-case, populate, bulk-query, clock and faults with no box running: one line
    NetworkUnavailable saying to start it; populate writes nothing to the registry."""
    conf = str(stopped.path)
    source = tmp_path / "lines.csv"
    source.write_text("x\n", encoding="utf-8")
    commands = (
        ("demo",),
        ("use-case", "2"),
        ("populate", "--size", "10"),
        ("bulk-query", str(source), "-i", "meguro", "-s", "care-insurance", "--retry-for", "0"),
        ("clock", "show"),
        ("faults", "list"),
    )
    for command in commands:
        line = one_line(run("renkei", *command, "-c", conf), "NetworkUnavailable")
        assert "make run" in line, command
    assert not list(tmp_path.glob("*.sqlite"))


def test_a_command_line_that_is_not_valid_is_one_line_pointing_to_the_help() -> None:
    """A wrong argument, a missing option, an unknown command: UsageInvalid, status 2, and
    the --help of the command meant; a group named alone still shows its help."""
    runner = CliRunner()
    for args, where in (
        (["use-case", "5"], "renkei use-case --help"),
        (["staff", "list"], "renkei staff list --help"),
        (["populate", "--size", "huge"], "renkei populate --help"),
        (["bogus"], "renkei --help"),
    ):
        result = runner.invoke(main_command(), args, prog_name="renkei")
        assert result.exit_code == 2, result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: UsageInvalid: "), result.output
        assert lines[0].endswith(f"See {where}."), lines[0]
    shown = runner.invoke(main_command(), ["staff"])
    assert "Commands:" in shown.output and "reset-password" in shown.output


def main_command() -> click.Group:
    from renkei.cli import main

    return main


def test_an_unknown_institution_names_the_ones_there_are(stopped: Any, tmp_path: Path) -> None:
    """-i nerima (staff, audit, bulk-query) and pki revoke nerima: UnknownInstitution with
    the institutions of the configuration; pki enrol names the outside members (none)."""
    conf = str(stopped.path)
    source = tmp_path / "lines.csv"
    source.write_text("x\n", encoding="utf-8")
    for command in (
        ("staff", "list", "-i", "nerima"),
        ("audit", "verify", "-i", "nerima"),
        ("bulk-query", str(source), "-i", "nerima", "-s", "care-insurance"),
        ("pki", "revoke", "nerima"),
    ):
        line = one_line(run("renkei", *command, "-c", conf), "UnknownInstitution")
        assert "nerima" in line and "meguro, setagaya" in line, line
    enrol = ("pki", "enrol", "nerima", "--out", str(tmp_path / "out"), "-c", conf)
    line = one_line(run("renkei", *enrol), "UnknownInstitution")
    assert "outside members (external = true)" in line and "there is none" in line


def test_a_configuration_that_cannot_be_used_says_which_and_why(tmp_path: Path) -> None:
    """A missing configuration file and one without a required key: ConfigurationInvalid,
    naming the file and what is wrong."""
    broken = tmp_path / "broken.conf"
    broken.write_text("[renkei]\npki = pki\n[institution:a]\ncode = 1\n", encoding="utf-8")
    missing = one_line(
        run("renkei", "demo", "-c", str(tmp_path / "none.conf")), "ConfigurationInvalid"
    )
    assert "none.conf" in missing and "No such file" in missing
    bad = one_line(run("renkei", "records", "verify", "-c", str(broken)), "ConfigurationInvalid")
    assert "[institution:a] has no 'kind'" in bad


def test_files_that_cannot_be_used_are_named_with_what_to_do(tmp_path: Path) -> None:
    """No PKI yet (demo), a system without a client certificate (bulk-query), a certificate
    request that is not one (pki enrol --csr-dir): FileUnusable naming the file."""
    outside = "[institution:nerima]\ncode = 1131202000000000\nname = 練馬区\n"
    outside += "kind = municipality\nexternal = true\nnetwork_address = https://127.0.0.1:9\n"
    outside += "provides = TM00000000000002\n"
    config = write_config(tmp_path, tmp_path / "pki", sections=outside)
    conf = str(config.path)
    line = one_line(run("renkei", "demo", "-c", conf), "FileUnusable")
    assert "ca.pem" in line and "renkei pki init" in line
    assert run("renkei", "pki", "init", str(config.pki), "-c", conf).returncode == 0
    source = tmp_path / "lines.csv"
    source.write_text("x\n", encoding="utf-8")
    line = one_line(
        run("renkei", "bulk-query", str(source), "-i", "meguro", "-s", "tax", "-c", conf),
        "FileUnusable",
    )
    assert "tax.pem" in line and "care-insurance" in line
    requests = tmp_path / "requests"
    requests.mkdir()
    for name in ("tls.csr", "signing.csr", "encryption.csr"):
        (requests / name).write_text("not a request\n", encoding="utf-8")
    enrol = ("pki", "enrol", "nerima", "--out", str(tmp_path / "out"), "--csr-dir", str(requests))
    line = one_line(run("renkei", *enrol, "-c", conf), "FileUnusable")
    assert "certificate signing request" in line


def test_a_database_that_is_not_there_is_one_line_and_is_not_made(stopped: Any) -> None:
    """`renkei records verify` before the box ever started: DatabaseUnavailable, and no
    database file is left behind."""
    line = one_line(
        run("renkei", "records", "verify", "-c", str(stopped.path)), "DatabaseUnavailable"
    )
    assert "does not exist yet" in line and "make run" in line
    assert not list(stopped.path.parent.glob("*.sqlite"))


def test_a_coded_refusal_of_the_database_work_is_one_line(stopped: Any) -> None:
    """staff reset-password of nobody, staff add of a user that exists: the code of the
    refusal and what to do."""
    conf = str(stopped.path)
    line = one_line(
        run("renkei", "staff", "reset-password", "nobody", "-c", conf, "-i", "meguro",
            "--generate-password"),
        "UnknownStaffUser",
    )  # fmt: skip
    assert "renkei staff list" in line
    add = ("staff", "add", "op", "-c", conf, "-i", "meguro", "--roles", "operator")
    assert run("renkei", *add, "--generate-password").returncode == 0
    line = one_line(run("renkei", *add, "--generate-password"), "StaffUserExists")
    assert "--if-absent" in line


@pytest_twisted.ensureDeferred
async def test_a_coded_refusal_of_a_node_is_one_line(box: Any, tmp_path: Path) -> None:
    """A bulk query the node does not know and a file it refuses whole: the node's code
    (UnknownBulkQuery, BulkQueryFileInvalid) and what to do, in one line."""
    common = ("-c", str(box.config.path), "-i", "meguro", "-s", "care-insurance")
    _, err, code = await renkei_beside_the_box("bulk-query", *common, "--resume", "nosuch")
    assert code == 1 and err.startswith("error: UnknownBulkQuery: "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _, err, code = await renkei_beside_the_box("bulk-query", str(empty), *common)
    assert code == 1 and err.startswith("error: BulkQueryFileInvalid: "), err
    assert len(err.splitlines()) == 1 and "docs/bulk-query.md" in err


def test_an_unexpected_error_still_shows_its_traceback() -> None:
    """A failure that is none of the expected ones (a bug) is not turned into a line: it
    propagates with its traceback."""

    @click.group(cls=CommandGroup)
    def group() -> None:
        """A group of one command that has a bug."""

    @group.command()
    def broken() -> None:
        raise ValueError("a bug")

    result = CliRunner().invoke(group, ["broken"])
    assert isinstance(result.exception, ValueError)
    assert expected(ValueError("a bug")) is None
    assert expected(KeyError("x")) is None


def test_twistd_renkei_option_errors_are_one_line(tmp_path: Path) -> None:
    """`twistd renkei` with an unknown option, an unknown party or a configuration that
    cannot be used: one line (not every option's help), its code and status 1."""
    config = write_config(tmp_path, tmp_path / "pki")
    for args, code in (
        (("--bogus",), "UsageInvalid"),
        (("-c", str(config.path), "--party", "nerima"), "UsageInvalid"),
        (("-c", str(tmp_path / "none.conf")), "ConfigurationInvalid"),
    ):
        result = run("twistd", "-n", "renkei", *args)
        assert result.returncode == 1, result.stderr
        lines = (result.stdout + result.stderr).splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"twistd renkei: error: {code}: "), lines
