"""A sandbox: the repository's network in a box (twistd.conf), moved into a directory of its
own, with free ports, its own databases and PKI and quick delivery settings.

What the scenario runner starts when it is given no running network, and what the tests of
the whole network use: the same institutions, rules and demo persons as ``make run``.
"""

from __future__ import annotations

import configparser
import os
import random
import socket
from pathlib import Path

from crypto.pki import InstitutionEntry, init_pki
from middleware.config import Config, load_config

__all__ = ["REPOSITORY", "free_port", "sandbox_config", "sandbox_pki"]

REPOSITORY = Path(__file__).resolve().parent.parent
QUICK_DELIVERY = {
    "retry_initial": "0.1",
    "retry_maximum": "0.5",
    "lease": "2",
    "poll_interval": "0.2",
}


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_slice(low: int, high: int) -> tuple[int, int]:
    """The part of ``low``..``high`` that this pytest-xdist worker draws from (all of it
    outside xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if not worker.startswith("gw") or not worker[2:].isdigit() or count < 2:
        return low, high
    width = (high - low + 1) // count
    start = low + int(worker[2:]) % count * width
    return start, start + width - 1


def free_port() -> int:
    """A loopback port to listen on, below the kernel's ephemeral range (where outgoing
    connections take their ports: a port the kernel picks would be free now and maybe taken
    by a client connection before the box listens on it), never the same twice a session.

    Under pytest-xdist each worker draws from its own slice of that range: workers are
    separate processes, so one cannot see what another handed out, and two boxes started at
    once by two workers would otherwise meet on a port between one's probe and its listen."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(1024, high - 12_000)
    low, high = _worker_slice(low, high)
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def sandbox_config(
    directory: Path,
    *,
    population: str | None = None,
    demo: bool = True,
    template: Path = REPOSITORY / "twistd.conf",
) -> Config:
    """``template`` moved into ``directory``: free ports, databases, PKI, token and replica
    inbox there, quick delivery settings; the demo persons (``demo``) and the generated
    ``population`` (a size, or none) loaded at start. Run `sandbox_pki` on it before
    starting it."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(template, encoding="utf-8")
    parser["renkei"]["pki"] = str(directory / "pki")
    if not demo:
        parser.remove_section("demo")
    elif parser.has_section("demo"):
        parser["demo"]["data"] = str(REPOSITORY / parser["demo"]["data"])
    if population is None:
        parser.remove_section("population")
    else:
        parser["population"]["size"] = population
    ports: dict[int, int] = {}

    def port(endpoint: str) -> int:
        old = int(endpoint.split("port=")[1].split(":")[0])
        return ports.setdefault(old, free_port())

    for name in parser.sections():
        section = parser[name]
        for key in list(section):
            value = section[key]
            if key.endswith("listen"):
                section[key] = value.replace(
                    f"port={value.split('port=')[1].split(':')[0]}", f"port={port(value)}"
                )
            elif key.endswith("address") and value.startswith(
                ("https://127.0.0.1:", "http://127.0.0.1:")
            ):
                scheme, old = value.split("://")[0], value.rsplit(":", 1)[1]
                section[key] = f"{scheme}://127.0.0.1:{port(f'port={old}:')}"
            elif key == "token":
                section[key] = str(directory / "control.token")
            elif key == "database":
                section[key] = f"sqlite:///{directory / (name.split(':')[-1] + '.sqlite')}"
            elif key == "replica_inbox":
                section[key] = str(directory / "replica-inbox")
            elif key in ("permitted_list", "delegations", "residents"):
                section[key] = str(REPOSITORY / value)
    parser["delivery"].update(QUICK_DELIVERY)
    path = directory / "network.conf"
    with path.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return load_config(path)


def sandbox_pki(config: Config) -> None:
    """The PKI of every institution of ``config`` and its back-office systems, and of
    マイナポータル when configured."""
    init_pki(
        config.pki,
        [InstitutionEntry(i.code, i.back_office_systems) for i in config.institutions],
        portal=config.portal.code if config.portal is not None else None,
    )
