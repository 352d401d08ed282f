"""Running scenarios: each in a network in a box of its own, step by step, with a verdict.

`ScenarioRunner` starts, for each scenario, the repository's network in a box in memory
(renkei/sandbox.py: the institutions, rules and demo persons of ``make run``, fresh
databases; one PKI for the whole run) and runs its steps in order, each within its timeout.
A step that fails ends the scenario (the steps after it are not run). Whatever the steps
say, a scenario passes only if the always-on checks hold at its end (`_validated`): every
message the parties exchanged (captured, simulators/capture.py) is schema-valid, the permits
are the hub's and the payloads open for their requester alone, signed by their provider, and
every party's hash chain of provision records verifies. Time-based steps move the network's
clock (middleware/clock.py), so "deleted after seven days" takes a moment. Against a
running network (``running``), see `ScenarioRunner`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from codes.errors import RenkeiError
from middleware.network import HUB
from middleware.records import verify_chain
from middleware.replica import JST
from middleware.tables import hub_record_head, hub_records, node_record_head, node_records
from renkei.control import parse_duration, parse_moment
from renkei.sandbox import sandbox_config, sandbox_pki
from renkei.scenarios.loading import Scenario
from simulators.back_office import FINISHED, BackOfficeClient, BackOfficeError
from simulators.capture import Exchange, MessageLog, check_exchange
from simulators.faults import Fault

__all__ = [
    "DEFAULT_TIMEOUT",
    "ScenarioOutcome",
    "ScenarioRunner",
    "StepFailed",
    "StepOutcome",
    "cryptography_problems",
]

DEFAULT_TIMEOUT = 30.0  # seconds a step may take unless it says
POLL = 0.05  # seconds between two looks of a waiting step


class StepFailed(Exception):
    """A step whose expectation does not hold (its message says what was expected and seen)."""


@dataclass(frozen=True)
class StepOutcome:
    """What became of one step."""

    number: int  # 1-based
    kind: str
    line: int
    passed: bool
    detail: str
    seconds: float


@dataclass
class ScenarioOutcome:
    """What became of one scenario: each step run, and why it failed if it did."""

    scenario: Scenario
    steps: list[StepOutcome] = field(default_factory=list)
    failure: str | None = None
    seconds: float = 0.0
    skipped: str | None = None  # why it was not run (a step a running network cannot do)
    messages: MessageLog = field(default_factory=MessageLog)  # every message exchanged
    calls: list[dict[str, Any]] = field(default_factory=list)  # the back offices' requests
    hits: list[Any] = field(default_factory=list)  # the faults' hits (simulators.faults.Hit)
    names: dict[str, str] = field(default_factory=dict)  # party code → its name

    @property
    def passed(self) -> bool:
        return self.failure is None


# The steps a scenario may take against a running network (the others need the network in a
# box of the run: its clock, its parties' lives, its links, its staff).
RUNNING_STEPS = frozenset({"query", "wait", "expect", "faults", "bulk_query", "record", "sleep"})


class ScenarioRunner:
    """Runs scenarios, each in a fresh in-memory network in a box under ``directory``, or,
    with ``running`` (its configuration), against a network that runs already (``make
    run``): back offices over its mutual TLS, faults through its control API, records read
    from its databases. Against a running network, a scenario that needs more (its clock,
    stopping a party, a staff decision, a party's own documents) is skipped, saying why;
    the faults a scenario added are cleared when it ends."""

    def __init__(self, reactor: Any, directory: Path, running: Any = None) -> None:
        self._reactor = reactor
        self._directory = directory
        self._pki_made = False
        self._running = running

    async def run(self, scenario: Scenario) -> ScenarioOutcome:
        if self._running is not None:
            return await self._run_against_running(scenario)
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        box_directory = self._directory / scenario.name
        shutil.rmtree(box_directory, ignore_errors=True)
        box_directory.mkdir(parents=True)
        config = sandbox_config(box_directory)
        config = _with_pki(config, self._directory / "pki")
        if not self._pki_made:
            sandbox_pki(config)
            self._pki_made = True
        from renkei.service import Box
        from simulators.in_memory import InMemoryNetwork

        log = MessageLog()
        box = Box(config, self._reactor, network=InMemoryNetwork(self._reactor), capture=log)
        conversation = _Conversation(self._reactor, box, scenario)
        outcome.messages = log
        try:
            await box.start()
            await conversation.given()
            await self._steps(conversation, scenario, outcome)
            if outcome.failure is None:
                outcome.failure = await _validated(conversation, log)
        except Exception as failure:  # the network itself failed: the scenario cannot pass
            outcome.failure = f"{type(failure).__name__}: {failure}"
        finally:
            outcome.calls = conversation.calls
            outcome.hits = list(box.faults.hits)
            outcome.names = {HUB: "hub", **{m.code: m.name for m in config.members}}
            await conversation.close()
            await box.stopService()
        outcome.seconds = _since(began)
        return outcome

    async def _run_against_running(self, scenario: Scenario) -> ScenarioOutcome:
        outcome = ScenarioOutcome(scenario)
        began = time.monotonic()
        needs = sorted(
            {kind for step in scenario.steps for kind in step if kind not in RUNNING_STEPS}
            | ({"given clock"} if "clock" in scenario.given else set())
        )
        if needs:
            outcome.skipped = f"needs the network in a box of the run for {', '.join(needs)}"
            return outcome
        remote = _ControlClient(self._reactor, self._running)
        conversation = _Conversation(
            self._reactor, _Running(self._running, self._reactor), scenario, remote=remote
        )
        try:
            await self._steps(conversation, scenario, outcome)
            if outcome.failure is None:
                broken = await conversation.broken_chains()
                if broken:
                    outcome.failure = "hash chain broken at " + ", ".join(broken)
            outcome.messages = await conversation.recorded_exchanges()
        except Exception as failure:
            outcome.failure = outcome.failure or f"{type(failure).__name__}: {failure}"
        finally:
            outcome.calls = conversation.calls
            outcome.names = {HUB: "hub", **{m.code: m.name for m in self._running.members}}
            try:
                await remote.request("DELETE", "/faults")
            except Exception as failure:
                outcome.failure = outcome.failure or f"faults not cleared: {failure}"
            await conversation.close()
        outcome.seconds = _since(began)
        return outcome

    async def _steps(
        self, conversation: _Conversation, scenario: Scenario, outcome: ScenarioOutcome
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

    async def run_all(self, scenarios: Sequence[Scenario], report: Any = None) -> list[Any]:
        """Run ``scenarios`` in order; ``report(outcome)`` after each."""
        outcomes = []
        for scenario in scenarios:
            outcome = await self.run(scenario)
            outcomes.append(outcome)
            if report is not None:
                report(outcome)
        return outcomes


class _Running:
    """A running network as a conversation sees it: its configuration, real time, no
    captured messages."""

    def __init__(self, config: Any, reactor: Any) -> None:
        from codes.catalogue import default_catalogue

        self.config = config
        self.clock = reactor
        self.capture = MessageLog()
        self.catalogue = default_catalogue()


class _ControlClient:
    """The running network's control API (docs/control.md), with its token."""

    def __init__(self, reactor: Any, config: Any) -> None:
        from renkei.control import read_token

        if config.control is None:
            raise LookupError(f"{config.path} has no [control] section (docs/control.md)")
        self._address = config.control.address
        self._token = read_token(config.control.token)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        import json

        import treq
        from twisted.web.http_headers import Headers

        answer = await treq.request(
            method,
            self._address + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=Headers({"Authorization": [f"Bearer {self._token}"]}),
        )
        document = json.loads(await answer.content())
        if answer.code >= 400:
            error = document["error"]
            raise StepFailed(f"the control API refused: {error['code']}: {error['message_en']}")
        return document


async def _validated(conversation: _Conversation, log: MessageLog) -> str | None:
    """Why the run fails its always-on checks, or None: every captured message is a
    schema-valid message of the protocol; every permit the hub sent is signed by the hub;
    every payload relayed can be opened by its requester alone (the hub's keys fail) and is
    signed by its provider; every party's hash chain verifies."""
    problems = [problem for exchange in log.exchanges for problem in check_exchange(exchange)]
    problems += cryptography_problems(conversation.config, log)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"a captured message is not valid: {problems[0]}{more}"
    broken = await conversation.broken_chains()
    if broken:
        return "hash chain broken at " + ", ".join(broken)
    return None


def cryptography_problems(config: Any, log: MessageLog) -> list[str]:
    """What is wrong with the permits and payloads the hub sent (see `_validated`)."""
    from crypto.envelope import open_envelope
    from crypto.pki import PkiLayout, identity_of, load_certificate
    from crypto.xmlsig import CAVerifier, PinnedVerifier, SignatureInvalid
    from middleware import messages

    layout = PkiLayout(config.pki)
    hub_permits = PinnedVerifier(load_certificate(layout.hub_signing().certificate))
    providers = CAVerifier(load_certificate(layout.ca().certificate))
    hub_keys = [layout.hub_tls().load(), layout.hub_signing().load()]
    problems = []
    for exchange in log.exchanges:
        if exchange.source != HUB or exchange.request is None:
            continue
        number = exchange.transaction_number
        if exchange.operation == "provision_request":
            asked = messages.decode(exchange.request, messages.ProvisionRequest)
            try:
                hub_permits.verify(asked.permit_element)
            except SignatureInvalid:
                problems.append(f"the permit of {number} is not signed by the hub")
        elif exchange.operation == "provision":
            provision = messages.decode(exchange.request, messages.Provision)
            if provision.encrypted_payload is None:
                continue
            for key in hub_keys:
                try:
                    open_envelope(provision.encrypted_payload, key)
                except RenkeiError:
                    continue
                problems.append(f"the hub could open the payload of {number}")
            requester = layout.institution_encryption(exchange.destination).load()
            try:
                plaintext = open_envelope(provision.encrypted_payload, requester)
                element = messages.decode_signed(plaintext, messages.ProvisionPayload)
                _, signer = providers.verify(element)
            except (RenkeiError, SignatureInvalid) as failure:
                problems.append(f"the payload of {number} does not open and verify: {failure}")
                continue
            payload = messages.from_element(element, messages.ProvisionPayload)
            if identity_of(signer).common_name != payload.provider:
                problems.append(f"the payload of {number} is not signed by its provider")
    return problems


def _bulk_line(
    line: dict[str, Any], requester: str, provider: str, affair: str, asked_at: Any
) -> str:
    """One line of the 18-field bulk-query CSV for a line of a ``bulk_query`` step."""
    from adapters.care_insurance import bulk_query

    values = [""] * len(bulk_query.FIELDS)
    values[bulk_query.NUMBER_SYSTEM] = bulk_query.INTEGRATED_NUMBER_SYSTEM
    values[bulk_query.INTEGRATED_ADDRESS_NUMBER] = line["person"]
    values[bulk_query.REQUESTED_AT] = asked_at.strftime("%Y%m%d%H%M%S") + "000"
    values[bulk_query.DEPARTMENT] = "SCENARIO"
    values[bulk_query.USER_ID] = "scenario"
    values[bulk_query.REQUESTER] = requester
    values[bulk_query.NON_DISCLOSURE] = "0"
    values[bulk_query.AFFAIR] = affair
    values[bulk_query.PROCEDURE] = line["procedure"]
    values[bulk_query.PROVIDER] = provider
    values[bulk_query.INFORMATION_NAME] = line["information_name"]
    if "fiscal_year" in line:
        values[bulk_query.CONDITION_KIND] = "1"
        values[bulk_query.FISCAL_YEAR] = f"{line['fiscal_year']:04d}"
    return ",".join(values)


# In one second, the order of the messages a transaction's records stand for: the query to
# the hub, the provision request to the provider, the provision to the hub, the provision
# relayed to the requester; (operation, sent by the hub).
_RANK = {
    ("query", False): 0,
    ("provision_request", True): 1,
    ("provision", False): 2,
    ("provision", True): 3,
}


def _as_exchange(party: str, row: dict[str, Any]) -> Exchange | None:
    """The message a provision record stands for (None for a record that is no message: a
    result stored, a result deleted)."""
    requester, provider = row["requester"], row["provider"]
    event, status, at = row["event"], row["status"], row["recorded_at"]
    refusal = row["error_code"]
    number = row["transaction_number"]
    if party == requester and event == "query":
        route = (requester, HUB, "query")
    elif party == HUB and event == "query" and status != "refused":
        route = (HUB, provider, "provision_request")
    elif party == HUB and event == "query":
        route = (HUB, requester, "query")
    elif party == provider and event == "provision":
        route = (provider, HUB, "provision")
    elif party == HUB and event == "provision":
        route = (HUB, requester, "provision")
    else:
        return None
    source, destination, operation = route
    return Exchange(at, source, destination, operation, None, None, refusal=refusal,
                    number=number, state=status)  # fmt: skip


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _with_pki(config: Any, pki: Path) -> Any:
    from dataclasses import replace

    return replace(config, pki=pki)


class _Conversation:
    """One scenario's actors, captured values and steps, against its box."""

    def __init__(self, reactor: Any, box: Any, scenario: Scenario, remote: Any = None) -> None:
        self._reactor = reactor
        self._box = box  # in memory: the Box; against a running network: a `_Running`
        self.config = box.config
        self._remote = remote  # the running network's control API, if that is where it runs
        self._fault_names: list[str] = []  # the scenario's faults by their names in force
        self._scenario = scenario
        self._clients: dict[tuple[str, str], BackOfficeClient] = {}
        self.captured: dict[str, dict[str, Any]] = {}
        # What the back offices and staff did (for the report's sequence diagram).
        self.calls: list[dict[str, Any]] = []

    def _call(self, actor: str, party: str, what: str) -> dict[str, Any]:
        """Note a request of a back office (or a staff user) as it is made; its answer is
        filled in when it comes."""
        from middleware.clock import utc_now

        call = {
            "order": self._box.capture.next_order(),
            "at": utc_now(self._box.clock),
            "actor": actor,
            "party": party,
            "what": what,
            "answer": "",
        }
        self.calls.append(call)
        return call

    # -- names ------------------------------------------------------------------------------

    def _code(self, party: str) -> str:
        if party == HUB:
            return HUB
        return str(self._box.config.member(party).code)

    def _client(self, actor: str) -> BackOfficeClient:
        declared = self._scenario.actors.get(actor)
        if declared is None or declared["kind"] != "back_office":
            raise LookupError(f"{actor!r} is not a back-office actor of the scenario")
        institution = self._box.config.institution(declared["party"])
        system = declared.get("system") or institution.back_office_systems[0]
        key = (institution.name, system)
        if key not in self._clients:
            self._clients[key] = BackOfficeClient(
                self._reactor, self._box.config, institution, system
            )
        return self._clients[key]

    def _captured_query(self, name: str) -> dict[str, Any]:
        if name not in self.captured:
            raise LookupError(f"no query was captured as {name!r}")
        return self.captured[name]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    # -- the given state --------------------------------------------------------------------

    async def given(self) -> None:
        clock = self._scenario.given.get("clock")
        if clock == "frozen":
            self._box.clock.freeze()
        elif clock is not None:
            self._box.clock.set(parse_moment(clock))

    # -- the steps ---------------------------------------------------------------------------

    async def step(self, kind: str, argument: Any) -> str:
        timeout = (
            argument.get("timeout", DEFAULT_TIMEOUT)
            if isinstance(argument, dict)
            else (DEFAULT_TIMEOUT)
        )
        work = Deferred.fromCoroutine(getattr(self, f"_{kind}")(argument))
        work.addTimeout(timeout, self._reactor)
        try:
            detail: str = await work
        except Exception as failure:
            from twisted.internet.defer import TimeoutError as DeferredTimeout

            if isinstance(failure, DeferredTimeout):
                raise TimeoutError(f"not done within {timeout:g} s") from None
            raise
        return detail

    async def _query(self, argument: dict[str, Any]) -> str:
        client = self._client(argument["as"])
        body = {
            "integrated_address_number": argument["person"],
            "procedure": argument["procedure"],
            "information_name": argument["information_name"],
            "provider": self._code(argument["provider"]),
        }
        if "conditions" in argument:
            body["conditions"] = argument["conditions"]
        if "on_behalf_of" in argument:
            body["delegating_requester"] = self._code(argument["on_behalf_of"])
        refused = argument.get("refused")
        requester = str(self._scenario.actors[argument["as"]]["party"])
        call = self._call(argument["as"], requester, "POST /queries")
        try:
            submitted = await client.submit_query(**body)
        except BackOfficeError as refusal:
            call["answer"] = refusal.code
            if refused is None:
                raise
            if refusal.code != refused:
                raise StepFailed(f"refused with {refusal.code}, expected {refused}") from None
            return f"refused with {refusal.code} (HTTP {refusal.status})"
        call["answer"] = "accepted"
        if refused is not None:
            raise StepFailed(f"accepted as query {submitted['query_id']}, expected {refused}")
        if "capture" in argument:
            self.captured[argument["capture"]] = {
                "query_id": submitted["query_id"],
                "as": argument["as"],
            }
        return f"query {submitted['query_id']} submitted"

    async def _status(self, name: str) -> dict[str, Any]:
        captured = self._captured_query(name)
        status: dict[str, Any] = await self._client(captured["as"]).query_status(
            captured["query_id"]
        )
        captured["status"] = status
        return status

    async def _wait(self, argument: dict[str, Any]) -> str:
        wanted = argument["state"]
        while True:
            status = await self._status(argument["query"])
            state = status["state"]
            if state == wanted or (wanted == "ended" and state in FINISHED):
                return f"{argument['query']} is {state} (処理通番 {status['transaction_number']})"
            if state in FINISHED and wanted not in (state, "ended"):
                raise StepFailed(f"{argument['query']} ended {state}, not {wanted}")
            await deferLater(self._reactor, POLL, lambda: None)

    async def _expect(self, argument: dict[str, Any]) -> str:
        status = await self._status(argument["query"])
        seen = []
        if "state" in argument and status["state"] != argument["state"]:
            raise StepFailed(f"state {status['state']}, expected {argument['state']}")
        if "error" in argument:
            code = status["error"]["code"] if status["error"] else None
            if code != argument["error"]:
                raise StepFailed(f"error {code}, expected {argument['error']}")
        records = (status["result"] or {}).get("records", [])
        if "record_count" in argument and len(records) != argument["record_count"]:
            raise StepFailed(
                f"{len(records)} records provided, expected {argument['record_count']}"
            )
        for record_id, items in argument.get("records", {}).items():
            found = next((r for r in records if r["record_id"] == record_id), None)
            if found is None:
                raise StepFailed(f"record {record_id} not provided")
            values = {item["code"]: item["value"] for item in found["items"]}
            for code, value in items.items():
                if values.get(code) != value:
                    seen_value = values.get(code)
                    raise StepFailed(
                        f"record {record_id} item {code} is {seen_value!r}, expected {value!r}"
                    )
        if "result_deleted" in argument:
            deleted = status["result_deleted_at"] is not None
            if deleted != argument["result_deleted"]:
                raise StepFailed(
                    f"result {'deleted' if deleted else 'kept'}, expected "
                    f"{'deleted' if argument['result_deleted'] else 'kept'}"
                )
        hits_of = await self._fault_hits() if "fault_hits" in argument else {}
        for fault, expected in argument.get("fault_hits", {}).items():
            hits = hits_of.get(fault)
            if hits != expected:
                raise StepFailed(f"fault {fault} hit {hits} messages, expected {expected}")
            seen.append(f"{fault} hit {hits}")
        for party, expected in argument.get("recorded", {}).items():
            number = status["transaction_number"]
            count = await self._recorded(party, number)
            if count != expected:
                raise StepFailed(f"{party} holds {count} records of {number}, expected {expected}")
            seen.append(f"{party} {count}")
        return f"{argument['query']}: {status['state']}" + (f"; {', '.join(seen)}" if seen else "")

    async def _fault_hits(self) -> dict[str, int]:
        """How many messages each of the scenario's faults (f1, f2, ... in the order it added
        them) has hit."""
        if self._remote is not None:
            listed = await self._remote.request("GET", "/faults")
            counted = {fault["name"]: fault["hits"] for fault in listed["faults"]}
        else:
            counted = {name: hits for name, (_, hits) in self._box.faults.faults().items()}
        return {
            f"f{number}": counted[name]
            for number, name in enumerate(self._fault_names, start=1)
            if name in counted
        }

    async def _recorded(self, party: str, number: str | None) -> int:
        if number is None:
            return 0
        from middleware.storage import Database

        config = self.config
        assert config.network is not None
        if party == HUB:
            url, table = config.network.database, hub_records
        else:
            url, table = config.institution(party).database, node_records

        def counted(connection: Any) -> int:
            return int(
                connection.execute(
                    select(func.count())
                    .select_from(table)
                    .where(table.c.transaction_number == number)
                ).scalar_one()
            )

        database = Database(self._reactor, url, threads=1)
        database.start()
        try:
            return int(await database.read(counted))
        finally:
            database.stop()

    async def _faults(self, argument: dict[str, Any]) -> str:
        if argument.get("clear"):
            if self._remote is not None:
                await self._remote.request("DELETE", "/faults")
            else:
                self._box.faults.clear()
            self._fault_names.clear()
            return "every fault removed"
        fault = dict(argument["add"])
        values: dict[str, Any] = {"kind": fault["kind"]}
        if "from" in fault:
            values["source"] = self._code(fault["from"])
        if "to" in fault:
            values["destination"] = self._code(fault["to"])
        for key in ("operation", "probability", "limit"):
            if key in fault:
                values[key] = fault[key]
        for key in ("latency", "jitter"):
            if key in fault:
                values[key] = parse_duration(str(fault[key]))
        if "offset" in fault:
            text = str(fault["offset"])
            values["offset"] = (
                -parse_duration(text[1:]) if text.startswith("-") else parse_duration(text)
            )
        made = Fault(**values)
        if self._remote is not None:
            name = (await self._remote.request("POST", "/faults", made.to_json()))["name"]
        else:
            name = self._box.faults.add(made)
        self._fault_names.append(name)
        return f"fault f{len(self._fault_names)} ({fault['kind']}) in force as {name}"

    async def _clock(self, argument: dict[str, Any]) -> str:
        clock = self._box.clock
        if "freeze" in argument:
            clock.freeze()
        elif "resume" in argument:
            clock.resume()
        elif "advance" in argument:
            clock.advance(parse_duration(str(argument["advance"])))
        else:
            clock.set(parse_moment(argument["set"]))
        from middleware.clock import iso, utc_now

        return f"the network's clock at {iso(utc_now(clock))}"

    async def _decide(self, argument: dict[str, Any]) -> str:
        status = await self._status(argument["query"])
        number = status["transaction_number"]
        provider = self._box.config.member(status["provider"]).name
        held = self._box.nodes[provider].held
        staff = argument.get("staff", "scenario-approver")
        call = self._call(staff, provider, f"{argument['decision']} {number}")
        if argument["decision"] == "approve":
            await held.approve(number, staff)
        else:
            await held.refuse(number, staff, argument.get("reason", "refused by the scenario"))
        call["answer"] = "decided"
        return f"{provider}'s {staff} decided {argument['decision']} on {number}"

    async def _record(self, argument: dict[str, Any]) -> str:
        record = argument["record"]
        party = str(self._scenario.actors[argument["as"]]["party"])
        call = self._call(argument["as"], party, "POST /replica-records")
        try:
            await self._client(argument["as"]).register_replica_record(record)
        except BackOfficeError as refusal:
            if refusal.code != "RecordIdExists" or self._remote is None:
                raise
            call["answer"] = "there already (an earlier run)"
            return f"副本 record {record['record_id']} there already"
        call["answer"] = "registered"
        return f"副本 record {record['record_id']} registered"

    async def _filled(self, document: str) -> str:
        """``document`` with each ``${fugo:PARTY:PERSON}`` replaced by that person's 符号 at
        that party, and each ``${uuid}`` by a new message id."""
        import re
        import uuid

        from middleware.persons import fugo_of

        for party, person in set(re.findall(r"\$\{fugo:([a-z0-9-]+):([0-9]{15})\}", document)):
            fugo = await self._box.nodes[party].database.read(fugo_of, person)
            document = document.replace(f"${{fugo:{party}:{person}}}", fugo)
        while "${uuid}" in document:
            document = document.replace("${uuid}", str(uuid.uuid4()), 1)
        return document

    async def _send(self, argument: dict[str, Any]) -> str:
        from middleware.network import DeliveryRefused

        link = self._box.network.transport(self._code(argument["from"]))
        document = await self._filled(argument["document"])
        try:
            await link.exchange(
                self._code(argument["to"]), argument["operation"], document.encode()
            )
        except DeliveryRefused as refusal:
            if refusal.code != argument["refused"]:
                expected = argument["refused"]
                raise StepFailed(f"refused with {refusal.code}, expected {expected}") from None
            return f"{argument['to']} refused it with {refusal.code}"
        raise StepFailed(f"{argument['to']} accepted it, expected {argument['refused']}")

    async def _resend(self, argument: dict[str, Any]) -> str:
        import re
        import uuid

        from middleware.network import DeliveryRefused

        status = await self._status(argument["query"])
        number = status["transaction_number"]
        captured = next(
            (
                exchange
                for exchange in self._box.capture.exchanges
                if exchange.operation == argument["operation"]
                and exchange.transaction_number == number
                and exchange.request is not None
            ),
            None,
        )
        if captured is None:
            raise StepFailed(f"no {argument['operation']} of {number} was captured")
        document = captured.request
        assert document is not None
        if argument.get("new_message_id"):
            fresh = f'messageId="{uuid.uuid4()}"'.encode()
            document = re.sub(rb'messageId="[^"]*"', fresh, document, count=1)
        for change in argument.get("alter", ()):
            old = change["replace"].encode()
            if old not in document:
                raise StepFailed(f"the {argument['operation']} has no {change['replace']!r}")
            document = document.replace(old, change["with"].encode(), 1)
        destination = self._code(argument["to"]) if "to" in argument else captured.destination
        link = self._box.network.transport(captured.source)
        refused = argument.get("refused")
        try:
            await link.exchange(destination, argument["operation"], document)
        except DeliveryRefused as refusal:
            if refusal.code != refused:
                raise StepFailed(f"refused with {refusal.code}, expected {refused}") from None
            return f"the {argument['operation']} of {number} sent again: refused {refusal.code}"
        if refused is not None:
            raise StepFailed(f"the {argument['operation']} sent again was accepted, not {refused}")
        return f"the {argument['operation']} of {number} sent again: accepted"

    async def _bulk_query(self, argument: dict[str, Any]) -> str:
        import json

        from middleware.clock import utc_now

        client = self._client(argument["as"])
        requester = self._box.config.institution(self._scenario.actors[argument["as"]]["party"])
        asked_at = utc_now(self._box.clock).astimezone(JST).replace(tzinfo=None)
        rows = [
            line["raw"]
            if "raw" in line
            else _bulk_line(
                line,
                requester.code,
                self._code(line["provider"]),
                self._box.catalogue.procedure(line["procedure"]).affair,
                asked_at,
            )
            for line in argument["lines"]
        ]
        call = self._call(argument["as"], requester.name, "POST /bulk-queries")
        answer = await client.send_file(
            "/bulk-queries", ("\r\n".join(rows) + "\r\n").encode("cp932"), "text/csv"
        )
        bulk_id = json.loads(answer)["bulk_query_id"]
        call["answer"] = f"accepted {bulk_id}"
        while True:
            progress = await client.request("GET", f"/bulk-queries/{bulk_id}")
            if progress["state"] == "ended":
                break
            await deferLater(self._reactor, POLL, lambda: None)
        ended = {state: count for state, count in progress["by_state"].items() if count}
        wanted = {state: count for state, count in argument["ended"].items() if count}
        if ended != wanted:
            raise StepFailed(f"the lines ended {ended}, expected {wanted}")
        return f"bulk query {bulk_id} ended: {ended}"

    async def _stop(self, party: str) -> str:
        await self._box.stop_party(party)
        return f"{party} stopped"

    async def _start(self, party: str) -> str:
        await self._box.start_party(party)
        return f"{party} started again"

    async def _sleep(self, duration: Any) -> str:
        seconds = parse_duration(str(duration))
        await deferLater(self._reactor, seconds, lambda: None)
        return f"{seconds:g} s passed"

    # -- a running network's conversation, from its records ------------------------------------

    async def recorded_exchanges(self) -> MessageLog:
        """The messages of the scenario's transactions as the parties recorded them (a
        running network captures nothing): per record, the message it stands for, ordered
        with the back offices' requests by time."""
        from middleware.records import records_of_transaction
        from middleware.storage import Database

        config = self.config
        assert config.network is not None
        numbers = sorted(
            {
                captured["status"]["transaction_number"]
                for captured in self.captured.values()
                if captured.get("status", {}).get("transaction_number")
            }
        )
        parties = [(HUB, config.network.database, hub_records)]
        parties += [(i.code, i.database, node_records) for i in config.institutions]
        found: list[tuple[str, dict[str, Any]]] = []
        for party, url, table in parties:
            database = Database(self._reactor, url, threads=1)
            database.start()
            try:
                for number in numbers:
                    rows = await database.read(records_of_transaction, table, number)
                    found += [(party, row) for row in rows]
            finally:
                database.stop()
        exchanges = [exchange for party, row in found if (exchange := _as_exchange(party, row))]
        events: list[tuple[Any, int, Any]] = [(call["at"], -1, call) for call in self.calls]
        events += [(exchange.at, _RANK[exchange.operation, exchange.source == HUB], exchange)
                   for exchange in exchanges]  # fmt: skip
        events.sort(key=lambda event: (event[0], event[1]))
        log = MessageLog()
        for order, (_, _, event) in enumerate(events):
            if isinstance(event, dict):
                event["order"] = order
            else:
                event.order = order
                log.exchanges.append(event)
        return log

    # -- the validators ------------------------------------------------------------------------

    async def broken_chains(self) -> list[str]:
        """The parties whose hash chain of provision records does not verify (a stopped
        party's database is opened for the check)."""
        from middleware.storage import Database

        config = self._box.config
        assert config.network is not None
        parties = [(HUB, config.network.database, hub_records, hub_record_head)]
        parties += [
            (i.name, i.database, node_records, node_record_head) for i in config.institutions
        ]
        broken = []
        for name, url, records, head in parties:
            database = Database(self._reactor, url, threads=1)
            database.start()
            try:
                if await database.read(verify_chain, records, head) is not None:
                    broken.append(name)
            finally:
                database.stop()
        return broken
