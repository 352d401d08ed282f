"""Running scenarios: each in a network in a box of its own, step by step, with a verdict.

`ScenarioRunner` starts, for each scenario, the repository's network in a box in memory
(renkei/sandbox.py: the institutions, rules and demo persons of ``make run``, fresh
databases; one PKI for the whole run) and runs its steps in order (a `Conversation` with the
box as its target), each within its timeout. A step that fails ends the scenario (the steps
after it are not run). Whatever the steps say, a scenario passes only if the always-on
checks hold at its end (renkei/scenarios/validators.py). Time-based steps move the network's
clock (middleware/clock.py), so "deleted after seven days" takes a moment.

A scenario with ``given: {network: processes}`` (every scenario, with ``processes``) runs in
a network of processes of its own instead (renkei/scenarios/processes.py: the same sandbox,
each party in a process, supervised), with that network as its target (`RunningTarget`:
the control API, the messages its processes captured). Against a running network
(``running``, ``make run``), every scenario's target is that network: a scenario that needs
what it cannot do is skipped, saying why.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from middleware.config import Config
from middleware.network import HUB
from renkei.sandbox import sandbox_config, sandbox_pki
from renkei.scenarios.conversation import Conversation
from renkei.scenarios.loading import Scenario
from renkei.scenarios.outcomes import ScenarioOutcome, StepFailed, StepOutcome
from renkei.scenarios.targets import BoxTarget, RunningTarget, Target
from renkei.scenarios.validators import validated
from simulators.back_office import BackOfficeError
from simulators.capture import MessageLog

__all__ = ["ScenarioRunner"]


class ScenarioRunner:
    """Runs scenarios, each in a fresh in-memory network in a box under ``directory`` (in a
    network of processes of its own when it says ``given: {network: processes}``, or every
    one with ``processes``), or, with ``running`` (its configuration), against a network
    that runs already (``make run``): back offices over its mutual TLS, faults, the clock,
    the capture and the parties' lives through its control API, records read from its
    databases. Against a running network, a scenario that needs more than it can do is
    skipped, saying why; what a scenario changed is put back when it ends."""

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        running: Config | None = None,
        *,
        processes: bool = False,
    ) -> None:
        self._reactor = reactor
        self._directory = directory
        self._pki_made = False
        self._running = running
        self._processes = processes

    def _sandbox(self, scenario: Scenario) -> Config:
        """The sandbox configuration in a fresh work directory for ``scenario``, with the
        run's one PKI (made at the first scenario)."""
        directory = self._directory / scenario.name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        config = replace(sandbox_config(directory), pki=self._directory / "pki")
        if not self._pki_made:
            sandbox_pki(config)
            self._pki_made = True
        return config

    async def run(self, scenario: Scenario) -> ScenarioOutcome:
        network = scenario.given.get("network")
        if self._running is not None:
            if network not in (None, "processes"):
                outcome = ScenarioOutcome(scenario)
                outcome.skipped = f"needs a network of its own (given network: {network})"
                return outcome
            return await self._run_against_running(scenario, self._running)
        if network == "processes" or (network is None and self._processes):
            return await self._run_in_processes(scenario)
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        config = self._sandbox(scenario)
        from renkei.service import Box
        from simulators.in_memory import InMemoryNetwork

        log = MessageLog()
        box = Box(config, self._reactor, network=InMemoryNetwork(self._reactor), capture=log)
        conversation = Conversation(self._reactor, BoxTarget(box), scenario)
        needs = _needs(scenario, conversation.target)
        if needs:  # before the box starts
            outcome.skipped = needs
            return outcome
        outcome.messages = log
        try:
            await box.start()
            await conversation.given()
            await self._steps(conversation, scenario, outcome)
            if outcome.failure is None:
                outcome.failure = await validated(self._reactor, config, log)
        except Exception as failure:  # the network itself failed: the scenario cannot pass
            outcome.failure = f"{type(failure).__name__}: {failure}"
        finally:
            outcome.calls = conversation.calls
            outcome.hits = conversation.target.hits()
            outcome.names = _names(config)
            await conversation.close()
            await box.stopService()
        outcome.seconds = _since(began)
        return outcome

    async def _run_in_processes(self, scenario: Scenario) -> ScenarioOutcome:
        """``scenario`` in a network of processes of its own (its logs kept in its work
        directory)."""
        from renkei.scenarios.processes import ProcessNetwork

        began = time.monotonic()
        config = self._sandbox(scenario)
        directory = config.path.parent
        # The configuration file the processes read names the run's one PKI too.
        (directory / "pki").symlink_to(config.pki, target_is_directory=True)
        config = replace(config, pki=directory / "pki")
        network = ProcessNetwork(self._reactor, config, directory)
        try:
            await network.start()
            outcome = await self._run_against_running(scenario, config, fresh=True)
        except Exception as failure:  # the network did not start: the scenario cannot pass
            outcome = ScenarioOutcome(scenario)
            outcome.failure = f"the network of processes: {type(failure).__name__}: {failure}"
            outcome.names = _names(config)
        finally:
            await network.stop()
        outcome.seconds = _since(began)
        return outcome

    async def _run_against_running(
        self, scenario: Scenario, config: Config, fresh: bool = False
    ) -> ScenarioOutcome:
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        try:
            target = RunningTarget(config, self._reactor, fresh=fresh)
            await target.connect()
        except Exception as failure:  # no network there: the scenario cannot pass
            outcome.failure = f"the network did not answer: {type(failure).__name__}: {failure}"
            return outcome
        needs = _needs(scenario, target)
        if needs:
            outcome.skipped = needs
            return outcome
        conversation = Conversation(self._reactor, target, scenario)
        try:
            await target.begin()
            await conversation.given()
            await self._steps(conversation, scenario, outcome)
        except Exception as failure:
            outcome.failure = outcome.failure or f"{type(failure).__name__}: {failure}"
        finally:
            outcome.messages, problems = await target.end(conversation.calls)
            if problems:
                outcome.failure = outcome.failure or "; ".join(problems)
            if outcome.failure is None:
                outcome.failure = await validated(self._reactor, config, outcome.messages)
            outcome.calls = conversation.calls
            outcome.hits = target.hits()
            outcome.names = _names(config)
            await conversation.close()
        outcome.seconds = _since(began)
        return outcome

    async def _steps(
        self, conversation: Conversation, scenario: Scenario, outcome: ScenarioOutcome
    ) -> None:
        """Run the steps in order; the first that fails ends the scenario."""
        for number, step in enumerate(scenario.steps, start=1):
            ((kind, argument),) = step.items()
            line = scenario.lines[number - 1] if scenario.lines else 0
            started = time.monotonic()
            try:
                detail = await conversation.step(kind, argument)
            except (StepFailed, BackOfficeError, TimeoutError, LookupError) as failure:
                outcome.steps.append(
                    StepOutcome(number, kind, line, False, str(failure), _since(started))
                )
                outcome.failure = f"step {number} ({kind}, line {line}): {failure}"
                return
            outcome.steps.append(StepOutcome(number, kind, line, True, detail, _since(started)))

    async def run_all(
        self,
        scenarios: Sequence[Scenario],
        report: Callable[[ScenarioOutcome], None] | None = None,
    ) -> list[ScenarioOutcome]:
        """Run ``scenarios`` in order; ``report(outcome)`` after each."""
        outcomes = []
        for scenario in scenarios:
            outcome = await self.run(scenario)
            outcomes.append(outcome)
            if report is not None:
                report(outcome)
        return outcomes


def _needs(scenario: Scenario, target: Target) -> str | None:
    """Why ``target`` cannot run ``scenario`` (the steps and given state it cannot take), or
    None."""
    kinds = {kind for step in scenario.steps for kind in step}
    kinds |= {f"given {key}" for key in scenario.given}
    reasons: dict[str, list[str]] = {}
    for kind in sorted(kinds):
        reason = target.cannot(kind)
        if reason is not None:
            reasons.setdefault(reason, []).append(kind)
    if not reasons:
        return None
    return "; ".join(f"{reason} for {', '.join(kinds)}" for reason, kinds in reasons.items())


def _names(config: Config) -> dict[str, str]:
    return {HUB: "hub", **{member.code: member.name for member in config.members}}


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
