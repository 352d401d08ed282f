"""The network in a box of one scenario: its configuration and its PKI (renkei/sandbox.py:
the institutions, rules and demo persons of ``make run`` moved into the scenario's folder,
with free ports and fresh databases), and how its parties are linked.

The scenarios of a run share one PKI, made once; a scenario that changes the PKI — an
outside member enrolled for it (``given: outside_members``), certificates withdrawn by a
``revoke`` step — gets a copy of its own, so that no other scenario sees the change. An
outside member is added to the configuration as ``renkei pki enrol`` expects one (an
``[institution:NAME]`` section with ``external = true`` and a free port for its listener)
and enrolled before the box starts, so that the hub lists it from its start on.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from middleware.config import Config, load_config
from renkei.enrolment import enrol
from renkei.sandbox import free_port, sandbox_config, sandbox_pki
from renkei.scenarios.loading import Scenario

__all__ = ["changes_pki", "linked", "member_folder", "scenario_config"]


def linked(scenario: Scenario) -> str:
    """How the parties of the scenario's network are linked: ``given.network``; over
    sockets when it has outside members (their listeners are real), else in memory."""
    default = "sockets" if scenario.given.get("outside_members") else "memory"
    return str(scenario.given.get("network", default))


def member_folder(directory: Path, party: str) -> Path:
    """Where an outside member of the network in ``directory`` is handed its certificates."""
    return directory / "members" / party


def changes_pki(scenario: Scenario) -> bool:
    """Whether the scenario changes its network's PKI (an outside member enrolled,
    certificates withdrawn)."""
    return bool(scenario.given.get("outside_members")) or any(
        "revoke" in step for step in scenario.steps
    )


def scenario_config(directory: Path, scenario: Scenario, run_pki: Path) -> Config:
    """The configuration of ``scenario``'s network in ``directory``, with its outside
    members, its generated population and its own permitted-query list rules (a CSV next to
    the scenario, as the hub's); on the run's PKI (``run_pki``, made when
    missing), or on a copy of its own with its outside members enrolled (in their
    `member_folder`)."""
    # The generated population, when the scenario names one, is loaded at the box's start.
    config = sandbox_config(directory, population=scenario.given.get("population"))
    outside = scenario.given.get("outside_members", {})
    if outside:
        with config.path.open("a", encoding="utf-8") as text:
            for name, member in outside.items():
                text.write(
                    f"\n[institution:{name}]\n"
                    f"code = {member['code']}\n"
                    f"name = {member['name']}\n"
                    f"kind = {member.get('kind', 'municipality')}\n"
                    "external = true\n"
                    f"network_address = https://127.0.0.1:{free_port()}\n"
                    f"provides = {' '.join(member.get('provides', ()))}\n"
                )
        config = load_config(config.path)
    if "permitted_list" in scenario.given:
        config = _with_rules(config, scenario.path.parent / scenario.given["permitted_list"])
    sandbox_pki(replace(config, pki=run_pki))
    if not changes_pki(scenario):
        return replace(config, pki=run_pki)
    shutil.rmtree(config.pki, ignore_errors=True)
    shutil.copytree(run_pki, config.pki)
    for member in config.outside_members:
        enrol(config, member, member_folder(directory, member.name), None)
    return config


def _with_rules(config: Config, rules: Path) -> Config:
    """``config`` whose hub issues its permitted-query list from ``rules``."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config.path, encoding="utf-8")
    parser["network"]["permitted_list"] = str(rules.resolve())
    with config.path.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return load_config(config.path)
