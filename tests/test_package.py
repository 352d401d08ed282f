"""The installable package: a wheel that works outside the checkout.

The wheel is built from the checkout and installed, not editable, into a throwaway venv. The
venv finds the dependencies through one ``.pth`` line naming the test environment's
site-packages: a path line adds the folder but runs none of its ``.pth`` files, so the
checkout's editable install stays invisible. The commands run from a folder that is not the
checkout; everything they read (schemas, migrations, the catalogue, the permitted list, demo
data, templates, the OpenAPI document, the twistd plugin) must therefore come from the package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway venv with the checkout's wheel installed in it; returns the venv."""
    build = tmp_path_factory.mktemp("wheel")
    leftover = REPOSITORY / "build"
    existed = leftover.exists()
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(build), "."],
            cwd=REPOSITORY,
            check=True,
            capture_output=True,
        )
    finally:
        if not existed:
            shutil.rmtree(leftover, ignore_errors=True)
    (wheel,) = build.glob("renkei-*.whl")
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", wheel],
        check=True,
        capture_output=True,
    )
    return home


def site_packages(environment: Path) -> Path:
    """The venv's own site-packages folder."""
    (folder,) = (environment / "lib").glob("python3*/site-packages")
    return folder


def run(cwd: Path, *command: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a command from ``cwd`` with nothing of the checkout in its environment."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_wheel_carries_the_package_data(environment: Path) -> None:
    """Schemas, migrations, the catalogue, the network's data, demo data, templates, the
    OpenAPI document and the twistd plugin are in the installed package."""
    for part in (
        "middleware/schemas/QueryRequest.xsd",
        "middleware/migrations/versions/0001_initial_schema_of_an_intermediate_server.py",
        "simulators/network/migrations/env.py",
        "codes/data/catalogue.json",
        "simulators/network/data/permitted_list.csv",
        "simulators/network/data/delegations.csv",
        "simulators/data/demo.json",
        "adapters/console/templates/base.html",
        "adapters/care_insurance/schemas/SPIRegistrationDeleteList.xsd",
        "adapters/openapi.json",
        "twisted/plugins/renkei_plugin.py",
    ):
        assert (site_packages(environment) / part).is_file(), part


def test_installed_commands_work_outside_the_checkout(environment: Path, tmp_path: Path) -> None:
    """From an unrelated folder, the installed package is what is imported, the installed
    ``renkei pki init`` makes a network's keys from a configuration, and ``twistd renkei
    --help`` finds the installed plugin."""
    installed = site_packages(environment)
    data = installed / "simulators" / "network" / "data"
    config = tmp_path / "renkei.conf"
    config.write_text(
        (REPOSITORY / "twistd.conf")
        .read_text(encoding="utf-8")
        .replace(
            "permitted_list = simulators/network/data/permitted_list.csv",
            f"permitted_list = {data / 'permitted_list.csv'}",
        )
        .replace(
            "delegations = simulators/network/data/delegations.csv",
            f"delegations = {data / 'delegations.csv'}",
        )
        .replace("data = simulators/data/demo.json", "data = demo.json"),
        encoding="utf-8",
    )
    python = environment / "bin" / "python"
    where = run(tmp_path, python, "-c", "import renkei, middleware; print(middleware.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed)), where.stdout
    made = run(
        tmp_path, environment / "bin" / "renkei", "pki", "init", tmp_path / "pki", "-c", config
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "pki" / "ca.pem").is_file()
    helped = run(
        tmp_path,
        python,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
        "renkei",
        "--help",
    )
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout
