"""Shared fixtures: the test network's PKI, a running network in a box, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted

from tests.network import (
    CARE_INFORMATION,
    CARE_INSURANCE,
    make_network_pki,
    make_portal_pki,
    portal_sections,
    write_config,
)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop any database pool a failed teardown left running, so the run can exit."""
    from middleware.storage import stop_all

    stop_all()


@pytest.fixture(scope="session")
def network_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test network's PKI, made once per session."""
    return make_network_pki(tmp_path_factory.mktemp("network-pki"))


async def running_box(config: Any, *, in_memory: bool) -> Any:
    """A box of ``config``, started: its parties linked in memory or over mutual TLS."""
    from twisted.internet import reactor

    from renkei.service import Box
    from simulators.in_memory import InMemoryNetwork

    running = Box(config, reactor, network=InMemoryNetwork(reactor) if in_memory else None)
    await running.start()
    return running


@pytest_twisted.async_yield_fixture
async def box(tmp_path: Path, network_pki: Path) -> AsyncIterator[Any]:
    """A running network in a box (hub, Meguro, Setagaya) with the demo population, its
    parties linked in memory (the same party code, no network sockets; the back-office API
    and the console still listen on loopback)."""
    running = await running_box(write_config(tmp_path, network_pki), in_memory=True)
    try:
        yield running
    finally:
        await running.stopService()


@pytest_twisted.async_yield_fixture
async def tls_box(tmp_path: Path, network_pki: Path) -> AsyncIterator[Any]:
    """The same box with every link over real loopback mutual TLS (the network listeners
    and transports of a deployment)."""
    running = await running_box(write_config(tmp_path, network_pki), in_memory=False)
    try:
        yield running
    finally:
        await running.stopService()


@pytest.fixture(scope="session")
def portal_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PKI of a test network with マイナポータル (and Shibuya), made once per session."""
    return make_portal_pki(tmp_path_factory.mktemp("portal-pki"))


@pytest_twisted.async_yield_fixture
async def portal_box(tmp_path: Path, portal_pki: Path) -> AsyncIterator[Any]:
    """A running network in a box with マイナポータル: the hub, Meguro, Setagaya, Shibuya and
    the portal, with the demo population, linked in memory (the back-office APIs, the
    consoles and the portal's pages listen on loopback). Shibuya hides what it provides of
    care insurance from persons' disclosure (提供側不開示: ``non_disclosed``)."""
    sections = portal_sections(tmp_path, extra=f"non_disclosed = {CARE_INFORMATION}")
    config = write_config(tmp_path, portal_pki, sections=sections)
    running = await running_box(config, in_memory=True)
    try:
        yield running
    finally:
        await running.stopService()


@pytest.fixture(params=["in-memory", "mutual-tls"])
def either_box(request: pytest.FixtureRequest) -> Any:
    """The box linked in memory, then the same over mutual TLS: a test of both links."""
    return request.getfixturevalue("box" if request.param == "in-memory" else "tls_box")


@pytest_twisted.async_yield_fixture
async def meguro_care(box: Any) -> AsyncIterator[Any]:
    """Meguro's care-insurance back office, connected to its node."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    client = BackOfficeClient(reactor, box.config, box.config.institution("meguro"), CARE_INSURANCE)
    try:
        yield client
    finally:
        await client.close()


# -- PostgreSQL: the local server when one listens, else a throwaway one ----------------------


def _local_server() -> str | None:
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2):
            return "postgresql://postgres@127.0.0.1:5432"
    except psycopg.Error:
        return None


def _throwaway_server(directory: Path) -> Iterator[str]:
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not binaries:
        pytest.skip("no PostgreSQL server binaries (make test installs them)")
    bin_dir = binaries[-1].parent
    data = directory / "data"
    port = str(49152 + os.getpid() % 10000)
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the package's postgres user.
        shutil.chown(directory, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-o",
            f"-p {port} -h 127.0.0.1 -k {directory}",
            "-l",
            str(directory / "log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )


@pytest.fixture(scope="session")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server URL without a database name."""
    local = _local_server()
    if local is not None:
        yield local
        return
    # Not under pytest's root-only temporary directory: the server may run as postgres.
    directory = Path(tempfile.mkdtemp(prefix="renkei-postgresql-"))
    try:
        yield from _throwaway_server(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgresql_database(postgresql_server: str) -> Iterator[Any]:
    """A factory of fresh databases on the server, dropped after the test."""
    created: list[str] = []

    def create() -> str:
        name = f"renkei_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{postgresql_server}/postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{postgresql_server}/{name}"

    yield create
    with psycopg.connect(f"{postgresql_server}/postgres", autocommit=True) as connection:
        for name in created:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
