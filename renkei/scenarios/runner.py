"""Running scenarios: each in a network in a box of its own, step by step, with a verdict.

`ScenarioRunner` starts, for each scenario, the repository's network in a box
(renkei/scenarios/networks.py: the institutions, rules and demo persons of ``make run``,
and the generated population when the scenario names it, fresh databases, one PKI for the
whole run unless the scenario changes it), its parties linked in memory or over loopback
mutual TLS (``given: {network: sockets}``), starts its systems under test
(renkei/scenarios/sut.py) and runs its steps in order (a `Conversation` with the box as its
target), each within its timeout. A step that fails ends the scenario (the steps after it
are not run). Whatever the steps say, a scenario passes only if the always-on checks hold at
its end (renkei/scenarios/validators.py). Time-based steps move the network's clock
(middleware/clock.py), so "deleted after seven days" takes a moment.

A scenario with ``given: {network: processes}`` (every scenario in memory, with
``processes``) runs in a network of processes of its own instead
(renkei/scenarios/processes.py: the same configuration, each party in a process,
supervised), with that network as its target (`RunningTarget`: the control API, the
messages its processes captured). Against a running network (``running``, ``make run``),
every scenario's target is that network: a scenario that needs what it cannot do is
skipped, saying why, and so is a scenario whose system under test is not bound (``--sut``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

from middleware.config import Config
from middleware.network import HUB
from renkei.scenarios.conversation import Conversation
from renkei.scenarios.loading import Scenario
from renkei.scenarios.networks import linked, scenario_config
from renkei.scenarios.outcomes import ScenarioOutcome, StepFailed, StepOutcome
from renkei.scenarios.sut import Binding, SystemsUnderTest, sut_actors, unbound
from renkei.scenarios.targets import BoxTarget, RunningTarget, SocketsBoxTarget, box_cannot
from renkei.scenarios.validators import validated
from simulators.back_office import BackOfficeError
from simulators.capture import MessageLog

__all__ = ["START_ATTEMPTS", "ScenarioRunner"]

START_ATTEMPTS = 3  # times a scenario's network is made again when a port it chose was taken


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
        suts: Mapping[str, Binding] | None = None,
        tell: Callable[[str], None] = print,
        *,
        processes: bool = False,
    ) -> None:
        self._reactor = reactor
        self._directory = directory
        self._running = running
        # How each system under test is started (renkei/scenarios/sut.py), by actor name;
        # ``tell`` shows a tester what a SUT they start needs, when the scenario starts.
        self._suts = dict(suts or {})
        self._tell = tell
        self._processes = processes

    async def run(self, scenario: Scenario) -> ScenarioOutcome:
        if sut_actors(scenario):
            skipped = (
                "a system under test is run only in a network in a box of the run"
                if self._running is not None
                else unbound(scenario, self._suts)
            )
            if skipped is not None:
                return ScenarioOutcome(scenario, skipped=skipped)
        network = linked(scenario)
        if self._running is not None:
            if network not in ("memory", "processes"):
                why = f"needs a network of its own (given network: {network})"
                return ScenarioOutcome(scenario, skipped=why)
            return await self._run_against_running(scenario, self._running)
        if network == "processes" or (network == "memory" and self._processes):
            return await self._run_in_processes(scenario)
        needs = _needs(scenario, box_cannot)
        if needs:  # before the box starts
            return ScenarioOutcome(scenario, skipped=needs)
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        log = MessageLog()
        outcome.messages = log
        try:
            config, box = await self._started_box(scenario, log)
        except Exception as failure:  # the network could not start: the scenario cannot pass
            outcome.failure = f"{type(failure).__name__}: {failure}"
            outcome.seconds = _since(began)
            return outcome
        target = BoxTarget(box) if box.network is not None else SocketsBoxTarget(box)
        conversation = Conversation(self._reactor, target, scenario)
        suts = SystemsUnderTest(self._reactor, config, scenario, self._suts, self._tell)
        try:
            await conversation.given()
            suts.start()
            await self._steps(conversation, scenario, outcome)
            if outcome.failure is None:
                outcome.failure = await validated(self._reactor, config, log)
        except Exception as failure:  # the network itself failed: the scenario cannot pass
            outcome.failure = f"{type(failure).__name__}: {failure}"
        finally:
            await suts.stop()
            if sut_actors(scenario):  # what each SUT was told and did, before the steps
                outcome.steps.insert(0, StepOutcome(0, "sut", 0, True, suts.report(), 0.0))
            outcome.calls = conversation.calls
            outcome.hits = conversation.target.hits()
            outcome.names = _names(config)
            await conversation.close()
            await target.close()
            await box.stopService()
        outcome.seconds = _since(began)
        return outcome

    async def _started_box(self, scenario: Scenario, log: MessageLog) -> tuple[Config, Any]:
        """The scenario's network in a box, started in a folder of its own, capturing into
        ``log``: in memory, the parties linked through an in-memory network; over sockets,
        with their listeners and mutual-TLS clients. A port chosen free but taken by another
        program before the box listens on it (on a shared machine) makes the network again
        on other ports, up to `START_ATTEMPTS` times."""
        from twisted.internet.error import CannotListenError

        from renkei.service import Box
        from simulators.in_memory import InMemoryNetwork

        for attempt in range(1, START_ATTEMPTS + 1):
            box_directory = self._directory / scenario.name
            shutil.rmtree(box_directory, ignore_errors=True)
            box_directory.mkdir(parents=True)
            config = scenario_config(box_directory, scenario, self._directory / "pki")
            network = InMemoryNetwork(self._reactor) if linked(scenario) == "memory" else None
            box = Box(config, self._reactor, network=network, capture=log)
            try:
                await box.start()  # a box that cannot start stops what it had started
            except CannotListenError:
                if attempt == START_ATTEMPTS:
                    raise
                log.exchanges.clear()  # what the parties of the attempt had sent
                continue
            return config, box
        raise AssertionError("unreachable")

    async def _run_in_processes(self, scenario: Scenario) -> ScenarioOutcome:
        """``scenario`` in a network of processes of its own (its logs kept in its work
        directory)."""
        from renkei.scenarios.processes import ProcessNetwork

        began = time.monotonic()
        directory = self._directory / scenario.name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        config = scenario_config(directory, scenario, self._directory / "pki")
        if config.pki != directory / "pki":
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
        needs = _needs(scenario, target.cannot)
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
        jobs: int = 1,
    ) -> list[ScenarioOutcome]:
        """Run ``scenarios``, up to ``jobs`` at once, each in its own network (one at a time
        against a running network, whose clock and faults every scenario shares, and when a
        tester starts a system under test, who is told one scenario at a time);
        ``report(outcome)`` as each ends. The outcomes come in the order of ``scenarios``."""
        if self._running is not None or any(b.command is None for b in self._suts.values()):
            jobs = 1
        semaphore = DeferredSemaphore(max(1, jobs))

        async def one(scenario: Scenario) -> ScenarioOutcome:
            await semaphore.acquire()
            try:
                outcome = await self.run(scenario)
            finally:
                semaphore.release()
            if report is not None:
                report(outcome)
            return outcome

        running = [Deferred.fromCoroutine(one(scenario)) for scenario in scenarios]
        return list(await gatherResults(running, consumeErrors=True))


def _needs(scenario: Scenario, cannot: Callable[[str], str | None]) -> str | None:
    """Why a target cannot run ``scenario`` (the steps and given state it ``cannot`` take),
    or None."""
    kinds = {kind for step in scenario.steps for kind in step}
    kinds |= {f"given {key}" for key in scenario.given}
    reasons: dict[str, list[str]] = {}
    for kind in sorted(kinds):
        reason = cannot(kind)
        if reason is not None:
            reasons.setdefault(reason, []).append(kind)
    if not reasons:
        return None
    return "; ".join(f"{reason} for {', '.join(kinds)}" for reason, kinds in reasons.items())


def _names(config: Config) -> dict[str, str]:
    return {HUB: "hub", **{member.code: member.name for member in config.members}}


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
