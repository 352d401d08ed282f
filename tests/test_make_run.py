"""`make run`'s first set-up of the consoles: a first admin (an approver too) at every
institution with a console, its password shown once and never a stale one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from renkei.sandbox import REPOSITORY, sandbox_config, sandbox_pki
from tests.test_box_process import run

BIN = Path(sys.executable).parent
PROVIDERS = ("meguro", "setagaya", "shibuya", "welfare", "pension")


def test_every_console_gets_a_first_admin_whose_password_is_shown_once(tmp_path: Path) -> None:
    """The first `make consoles` (run by `make run`) makes an admin and approver at each of
    the five institutions, shows its password and TOTP secret once and keeps them; later
    starts list the consoles and print no password, also after a reset."""
    config = sandbox_config(tmp_path)
    sandbox_pki(config)
    credentials = tmp_path / "consoles"

    def consoles() -> str:
        made = subprocess.run(
            [
                *("make", "--no-print-directory", "-C", str(REPOSITORY), "consoles"),
                *(f"CONFIG={config.path}", f"CREDENTIALS={credentials}", f"BIN={BIN}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        return made.stdout

    first = consoles()
    passwords = {}
    for name in PROVIDERS:
        passwords[name] = (credentials / f"{name}.password").read_text().strip()
        kept = (credentials / f"{name}.txt").read_text()
        assert f"password: {passwords[name]}" in kept and "TOTP secret: " in kept
        assert f"the first admin of {name}'s console, shown once" in first
        assert f"password: {passwords[name]}" in first
        assert (credentials / f"{name}.txt").stat().st_mode & 0o777 == 0o600
        listed = run("renkei", "staff", "list", "-c", str(config.path), "-i", name)
        assert "admin\t管理者\tadmin approver auditor operator\ttotp" in listed.stdout
    again = consoles()
    reset = run(
        *("renkei", "staff", "reset-password", "admin", "-c", str(config.path)),
        *("-i", "setagaya", "--generate-password"),
    )
    assert reset.returncode == 0, reset.stderr
    new = reset.stdout.split("password: ")[1].strip()
    after_reset = consoles()
    for shown in (again, after_reset):
        assert not [line for line in shown.splitlines() if line.startswith(("password:", "TOTP"))]
        assert not [p for p in (*passwords.values(), new) if p in shown]
        for name in PROVIDERS:
            address = config.institution(name).console_address
            assert f"{name:<10} {address}/  user admin" in shown
        assert "renkei staff reset-password admin -i NAME --generate-password" in shown
