"""Running scenarios: each in a network in a box of its own, step by step, with a verdict.

`ScenarioRunner` starts, for each scenario, the repository's network in a box in memory
(renkei/sandbox.py: the institutions, rules and demo persons of ``make run``, and the
generated population when the scenario names it, fresh databases; one PKI for the whole
run) and runs its steps in order (a `Conversation` with the box as its target), each within
its timeout. A step that fails ends the scenario (the steps
after it are not run). Whatever the steps say, a scenario passes only if the always-on
checks hold at its end (renkei/scenarios/validators.py). Time-based steps move the network's
clock (middleware/clock.py), so "deleted after seven days" takes a moment. Against a running
network (``running``), the conversation's target is that network (`RunningTarget`): a
scenario that needs what it cannot do is skipped, saying why.
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
from renkei.scenarios.recorded import recorded_exchanges
from renkei.scenarios.targets import BoxTarget, RunningTarget, Target
from renkei.scenarios.validators import broken_chains, validated
from simulators.back_office import BackOfficeError
from simulators.capture import MessageLog

__all__ = ["ScenarioRunner"]


class ScenarioRunner:
    """Runs scenarios, each in a fresh in-memory network in a box under ``directory``, or,
    with ``running`` (its configuration), against a network that runs already (``make
    run``): back offices over its mutual TLS, faults through its control API, records read
    from its databases. Against a running network, a scenario that needs more than it can
    do is skipped, saying why; the faults a scenario added are cleared when it ends."""

    def __init__(self, reactor: Any, directory: Path, running: Config | None = None) -> None:
        self._reactor = reactor
        self._directory = directory
        self._pki_made = False
        self._running = running

    async def run(self, scenario: Scenario) -> ScenarioOutcome:
        if self._running is not None:
            return await self._run_against_running(scenario, self._running)
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        box_directory = self._directory / scenario.name
        shutil.rmtree(box_directory, ignore_errors=True)
        box_directory.mkdir(parents=True)
        population = scenario.given.get("population")  # generated at the box's start
        config = replace(
            sandbox_config(box_directory, population=population), pki=self._directory / "pki"
        )
        if not self._pki_made:
            sandbox_pki(config)
            self._pki_made = True
        from renkei.service import Box
        from simulators.in_memory import InMemoryNetwork

        log = MessageLog()
        box = Box(config, self._reactor, network=InMemoryNetwork(self._reactor), capture=log)
        conversation = Conversation(self._reactor, BoxTarget(box), scenario)
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

    async def _run_against_running(self, scenario: Scenario, config: Config) -> ScenarioOutcome:
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        target = RunningTarget(config, self._reactor)
        needs = _needs(scenario, target)
        if needs:
            outcome.skipped = needs
            return outcome
        conversation = Conversation(self._reactor, target, scenario)
        try:
            await conversation.given()
            await self._steps(conversation, scenario, outcome)
            if outcome.failure is None:
                broken = await broken_chains(self._reactor, config)
                if broken:
                    outcome.failure = "hash chain broken at " + ", ".join(broken)
            outcome.messages = await recorded_exchanges(
                self._reactor, config, conversation.transaction_numbers(), conversation.calls
            )
        except Exception as failure:
            outcome.failure = outcome.failure or f"{type(failure).__name__}: {failure}"
        finally:
            outcome.calls = conversation.calls
            outcome.names = _names(config)
            try:
                await target.clear_faults()
            except Exception as failure:
                outcome.failure = outcome.failure or f"faults not cleared: {failure}"
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
