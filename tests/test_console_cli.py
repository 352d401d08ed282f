"""`renkei staff` and `renkei audit verify` on an institution's database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.network import write_config

BIN = Path(sys.executable).parent


def renkei(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "renkei"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_staff_commands_and_audit_verify_detects_tampering(tmp_path: Path) -> None:
    """`renkei staff add|list|disable|reset-password` work on a node's database and `renkei audit
    verify` detects an edited audit entry."""
    config = write_config(tmp_path, tmp_path / "pki")
    conf = str(config.path)
    password_file = tmp_path / "admin-password"
    added = renkei(
        "staff", "add", "admin", "-c", conf, "--institution", "meguro",
        "--roles", "admin approver", "--password-file", str(password_file),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    password = password_file.read_text().strip()
    assert f"password: {password}" in added.stdout
    assert "TOTP secret: " in added.stdout and "otpauth://totp/" in added.stdout
    assert str(config.institution("meguro").console_address) in added.stdout
    again = renkei(
        "staff", "add", "admin", "-c", conf, "--institution", "meguro",
        "--roles", "admin", "--password-file", str(password_file), "--if-absent",
    )  # fmt: skip
    assert again.returncode == 0 and "already exists" in again.stdout
    clash = renkei(
        "staff", "add", "admin", "-c", conf, "--institution", "meguro",
        "--roles", "admin", "--generate-password",
    )  # fmt: skip
    assert clash.returncode != 0 and "StaffUserExists" in clash.stderr
    assert renkei("staff", "add", "op", "-c", conf, "-i", "meguro", "--roles", "operator",
                  "--generate-password").returncode == 0  # fmt: skip
    listed = renkei("staff", "list", "-c", conf, "-i", "meguro")
    assert "admin\tadmin\tadmin approver\ttotp" in listed.stdout
    assert "op\top\toperator" in listed.stdout
    reset = renkei("staff", "reset-password", "op", "-c", conf, "-i", "meguro",
                   "--generate-password")  # fmt: skip
    assert reset.returncode == 0 and "password: " in reset.stdout
    assert renkei("staff", "disable", "op", "-c", conf, "-i", "meguro").returncode == 0
    assert "disabled" in renkei("staff", "list", "-c", conf, "-i", "meguro").stdout
    verified = renkei("audit", "verify", "-c", conf, "-i", "meguro")
    assert verified.returncode == 0 and "4 audit entries, chain intact" in verified.stdout
    with sqlite3.connect(tmp_path / "meguro.sqlite") as connection:
        connection.execute("UPDATE audit_record SET actor = 'someone' WHERE seq = 2")
    broken = renkei("audit", "verify", "-c", conf, "-i", "meguro")
    assert broken.returncode == 1 and "broken at entry 2" in broken.stdout
