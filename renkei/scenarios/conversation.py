"""One scenario's conversation: its actors, the values it captured and its steps, each taken
through its target (renkei/scenarios/targets.py: the network in a box of the run, or a
running network). `Conversation.step` runs one step within its timeout and says what
happened, or raises `StepFailed` saying what was expected and seen."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater

from middleware.network import HUB
from middleware.tables import hub_records, node_records
from renkei.control import parse_duration
from renkei.scenarios.back_office import BackOfficeSteps, refused_as
from renkei.scenarios.loading import Scenario
from renkei.scenarios.outcomes import StepFailed
from renkei.scenarios.staff import StaffActors
from renkei.scenarios.targets import Target, party_code, read_database
from renkei.scenarios.templating import Captured, field_of, filled
from simulators.back_office import FINISHED, BackOfficeClient, BackOfficeError
from simulators.faults import Fault

__all__ = ["DEFAULT_TIMEOUT", "Conversation"]

DEFAULT_TIMEOUT = 30.0  # seconds a step may take unless it says
POLL = 0.05  # seconds between two looks of a waiting step
CAPTURED_WAIT = 3.0  # seconds a message to send again has to be captured


class Conversation(BackOfficeSteps):
    """One scenario's actors, captured values and steps, against its target."""

    def __init__(self, reactor: Any, target: Target, scenario: Scenario) -> None:
        self._reactor = reactor
        self.target = target
        self.config = target.config
        self._fault_names: list[str] = []  # the scenario's faults by their names in force
        self._scenario = scenario
        self._clients: dict[tuple[str, str], BackOfficeClient] = {}
        self.captured: dict[str, dict[str, Any]] = {}  # the queries, by their names
        self.variables: dict[str, Captured] = {}  # what other steps captured
        # What the back offices and staff did (for the report's sequence diagram).
        self.calls: list[dict[str, Any]] = []
        self.staff = StaffActors(reactor, target, scenario.actors, scenario.steps, self._note)
        self._certificates: Any = None  # what the scenario presents and withdraws, once needed
        self._sut_taken: set[str] = set()  # the queries of systems under test seen so far

    def _note(self, actor: str, party: str, what: str) -> dict[str, Any]:
        """Note a request of a back office (or a staff user) as it is made; its answer is
        filled in when it comes."""
        from middleware.clock import utc_now

        call = {
            "order": self.target.capture.next_order(),
            "at": utc_now(self.target.clock),
            "actor": actor,
            "party": party,
            "what": what,
            "answer": "",
        }
        self.calls.append(call)
        return call

    # -- names ------------------------------------------------------------------------------

    def _code(self, party: str) -> str:
        return party_code(self.config, party)

    def _client(self, actor: str) -> BackOfficeClient:
        declared = self._scenario.actors.get(actor)
        if declared is None or declared["kind"] != "back_office":
            raise LookupError(f"{actor!r} is not a back-office actor of the scenario")
        institution = self.config.institution(declared["party"])
        system = declared.get("system") or institution.back_office_systems[0]
        key = (institution.name, system)
        if key not in self._clients:
            self._clients[key] = BackOfficeClient(self._reactor, self.config, institution, system)
        return self._clients[key]

    def transaction_numbers(self) -> set[str]:
        """The 処理通番 of the queries the scenario captured (as last seen)."""
        return {
            captured["status"]["transaction_number"]
            for captured in self.captured.values()
            if captured.get("status", {}).get("transaction_number")
        }

    def _captured_query(self, name: str) -> dict[str, Any]:
        if name not in self.captured:
            raise LookupError(f"no query was captured as {name!r}")
        return self.captured[name]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        await self.staff.end()

    # -- the given state --------------------------------------------------------------------

    async def given(self) -> None:
        await self.staff.begin()
        if "population" in self._scenario.given:
            self._given_population(self._scenario.given["population"])
        if "residents" in self._scenario.given:
            await self._given_residents(self._scenario.given["residents"])
        clock = self._scenario.given.get("clock")
        if clock == "frozen":
            await self.target.move_clock({"freeze": True})
        elif clock is not None:
            await self.target.move_clock({"set": clock})

    # -- the steps ---------------------------------------------------------------------------

    async def step(self, kind: str, argument: Any) -> str:
        timeout = (
            argument.get("timeout", DEFAULT_TIMEOUT)
            if isinstance(argument, dict)
            else (DEFAULT_TIMEOUT)
        )
        work = Deferred.fromCoroutine(self._take(kind, argument))
        work.addTimeout(timeout, self._reactor)
        try:
            detail: str = await work
        except Exception as failure:
            from twisted.internet.defer import TimeoutError as DeferredTimeout

            if isinstance(failure, DeferredTimeout):
                raise TimeoutError(f"not done within {timeout:g} s") from None
            raise
        return detail

    async def _take(self, kind: str, argument: Any) -> str:
        """Take one step, its argument's placeholders filled (renkei/scenarios/templating.py)."""
        step: Callable[[Any], Awaitable[str]] = getattr(self, f"_{kind}")
        return await step(await filled(argument, self._resolve))

    async def _resolve(self, expression: str) -> Any:
        """The value of one placeholder ``${expression}``."""
        import uuid

        if expression == "uuid":
            return str(uuid.uuid4())
        kind, _, rest = expression.partition(":")
        if kind == "fugo" and rest.count(":") == 1:
            from middleware.persons import fugo_of

            party, person = rest.split(":")
            url = self.config.institution(party).database
            return await read_database(self._reactor, url, fugo_of, person)
        if kind == "filler" and rest.isdigit():
            return "x" * int(rest)
        count, _, text = rest.partition(":")
        if kind == "repeat" and count.isdigit() and text:
            return text * int(count)
        if kind == "user" and rest:
            return self.staff.user_name(rest)
        name, *path = expression.split(".")
        return field_of(await self._captured_value(name, expression), path, expression)

    async def _captured_value(self, name: str, expression: str) -> Captured:
        if name in self.captured:  # a query: its 処理通番 and state as they are now
            status = await self._status(name)
            return Captured(status, status["query_id"], self.captured[name]["as"])
        if name in self.variables:
            return self.variables[name]
        raise StepFailed(f"${{{expression}}}: nothing was captured as {name!r}")

    async def _query(self, argument: dict[str, Any]) -> str:
        declared = self._scenario.actors.get(argument["as"], {})
        if declared.get("role") == "sut":
            return await self._sut_query(argument, declared)
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
        call = self._note(argument["as"], requester, "POST /queries")
        try:
            submitted = await client.submit_query(**body)
        except BackOfficeError as refusal:
            call["answer"] = refusal.code
            return refused_as(refusal, refused)
        call["answer"] = "accepted"
        if refused is not None:
            raise StepFailed(f"accepted as query {submitted['query_id']}, expected {refused}")
        if "capture" in argument:
            self.variables.pop(argument["capture"], None)
            self.captured[argument["capture"]] = {
                "query_id": submitted["query_id"],
                "as": argument["as"],
            }
        return f"query {submitted['query_id']} submitted"

    async def _sut_query(self, argument: dict[str, Any], declared: dict[str, Any]) -> str:
        """The runner does not play a system under test: it waits, within the step's
        timeout, until the SUT has sent the query the step describes (renkei/scenarios/sut.py)."""
        from renkei.scenarios.sut import BACK_OFFICE, await_sut_query

        party = self._code(declared["party"])
        asked = "POST /queries" if declared["kind"] == BACK_OFFICE else "QueryRequest"
        call = self._note(argument["as"], party if declared["kind"] == BACK_OFFICE else HUB, asked)
        try:
            captured, seen = await await_sut_query(
                self._reactor, self.config, declared, argument, self._sut_taken
            )
        except CancelledError:  # the step's timeout: say what was waited for
            where = "its node" if declared["kind"] == BACK_OFFICE else "the hub"
            raise StepFailed(
                f"{argument['as']} (the system under test) did not send its query about "
                f"{argument['person']} to {argument['provider']} ({argument['procedure']}, "
                f"{argument['information_name']}) in time: none was seen at {where}"
            ) from None
        call["answer"] = seen
        if "capture" in argument:
            self.captured[argument["capture"]] = {**captured, "as": argument["as"]}
        return f"{argument['as']} (the system under test): {seen}"

    async def _status(self, name: str) -> dict[str, Any]:
        captured = self._captured_query(name)
        if captured.get("at_the_hub"):  # an outside member's query: as the hub knows it
            from renkei.scenarios.sut import seen_at_the_hub

            captured["status"] = await seen_at_the_hub(
                self._reactor, self.config, captured["transaction_number"]
            )
            return dict(captured["status"])
        status: dict[str, Any] = await self._client(captured["as"]).query_status(
            captured["query_id"]
        )
        captured["status"] = status
        return status

    async def _wait(self, argument: dict[str, Any]) -> str:
        if "recorded" in argument:
            return await self._wait_for_records(argument["query"], argument["recorded"])
        wanted = argument["state"]
        if "bulk_query" in argument:
            return await self._wait_for_bulk_query(argument["bulk_query"], wanted)
        while True:
            status = await self._status(argument["query"])
            state = status["state"]
            if state == wanted or (wanted == "ended" and state in FINISHED):
                return f"{argument['query']} is {state} (処理通番 {status['transaction_number']})"
            if state in FINISHED and wanted not in (state, "ended"):
                raise StepFailed(f"{argument['query']} ended {state}, not {wanted}")
            await deferLater(self._reactor, POLL, lambda: None)

    async def _wait_for_records(self, name: str, wanted: dict[str, int]) -> str:
        """Until each party of ``wanted`` holds that many records of the query's 処理通番."""
        number = (await self._status(name))["transaction_number"]
        while True:
            held = {party: await self._recorded(party, number) for party in wanted}
            if held == wanted:
                counts = ", ".join(f"{party} {count}" for party, count in held.items())
                return f"records of {number}: {counts}"
            await deferLater(self._reactor, POLL, lambda: None)

    async def _expect(self, argument: dict[str, Any]) -> str:
        seen = []
        if "audit" in argument:
            numbers = self.transaction_numbers()
            seen.append(await self.staff.audit(argument["audit"], numbers))
            if "query" not in argument:
                return seen[0]
        status = await self._status(argument["query"])
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
            if found is not None and items is None:
                raise StepFailed(f"record {record_id} provided, expected it not to be")
            if items is None:
                continue
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
        counted = await self.target.fault_hits()
        return {
            f"f{number}": counted[name]
            for number, name in enumerate(self._fault_names, start=1)
            if name in counted
        }

    async def _recorded(self, party: str, number: str | None) -> int:
        if number is None:
            return 0
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

        return int(await read_database(self._reactor, url, counted))

    async def _faults(self, argument: dict[str, Any]) -> str:
        if argument.get("clear"):
            await self.target.clear_faults()
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
        name = await self.target.add_fault(made)
        self._fault_names.append(name)
        return f"fault f{len(self._fault_names)} ({fault['kind']}) in force as {name}"

    async def _clock(self, argument: dict[str, Any]) -> str:
        from middleware.clock import iso

        now = await self.target.move_clock(argument)
        return f"the network's clock at {iso(now)}"

    async def _decide(self, argument: dict[str, Any]) -> str:
        status = await self._status(argument["query"])
        provider = self.config.member(status["provider"]).name
        return await self.staff.decide(
            argument.get("staff"),
            provider,
            status["transaction_number"],
            argument["decision"],
            argument.get("reason"),
        )

    async def _console(self, argument: dict[str, Any]) -> str:
        return await self.staff.console(argument)

    async def _send(self, argument: dict[str, Any]) -> str:
        from middleware.network import DeliveryRefused

        link = self.target.transport(self._code(argument["from"]))
        document = argument["document"]
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
        captured = await self._captured_message(argument["operation"], number)
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
        source = self._code(argument["from"]) if "from" in argument else captured.source
        link = self.target.transport(source)
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

    async def _captured_message(self, operation: str, number: str) -> Any:
        """The first ``operation`` of the 処理通番 ``number`` captured, as soon as it is (a
        network of processes captures an exchange once it has ended)."""
        for _ in range(int(CAPTURED_WAIT / POLL)):
            self.target.capture.refresh()
            for exchange in self.target.capture.exchanges:
                if (
                    exchange.operation == operation
                    and exchange.transaction_number == number
                    and exchange.request is not None
                ):
                    return exchange
            await deferLater(self._reactor, POLL, lambda: None)
        raise StepFailed(f"no {operation} of {number} was captured")

    async def _stop(self, party: str) -> str:
        await self.target.stop_party(party)
        return f"{party} stopped"

    async def _start(self, party: str) -> str:
        await self.target.start_party(party)
        return f"{party} started again"

    async def _kill(self, party: str) -> str:
        await self.target.kill_party(party)
        return f"{party} killed (SIGKILL), started again by its supervisor and ready"

    async def _sleep(self, duration: Any) -> str:
        seconds = parse_duration(str(duration))
        await deferLater(self._reactor, seconds, lambda: None)
        return f"{seconds:g} s passed"

    # -- certificates the network must refuse (renkei/scenarios/certificates.py) -------------

    def _presented(self) -> Any:
        from renkei.scenarios.certificates import Presented

        if self._certificates is None:
            self._certificates = Presented(
                self.config.pki, self.config.path.parent / "certificates"
            )
        return self._certificates

    def _subject(self, name: str) -> Any:
        """Whose certificate: a back-office actor's system, or a party (or a party's
        actor)."""
        from renkei.scenarios.certificates import Subject

        declared = self._scenario.actors.get(name)
        if declared is not None and declared["kind"] == "back_office":
            institution = self.config.institution(declared["party"])
            system = declared.get("system") or institution.back_office_systems[0]
            return Subject(institution.code, system)
        return Subject(self._code(declared["party"] if declared is not None else name))

    async def _connect(self, argument: dict[str, Any]) -> str:
        from renkei.scenarios.certificates import knock, listener_of

        subject = self._subject(argument["as"])
        listener = listener_of(self.config, argument["to"], argument.get("listener", "network"))
        which = argument.get("certificate", "own")
        presented = self._presented()
        kind = listener.kind.replace("_", "-")
        what = f"{argument['as']} ({which}) at {argument['to']}'s {kind} listener"
        call = self._note(argument["as"], listener.party, f"TLS ({which}) to {kind}")
        try:
            knocked = await knock(listener, presented.ca, presented.files(subject, which))
        except (ConnectionRefusedError, TimeoutError) as failure:
            call["answer"] = "no connection"
            raise StepFailed(
                f"{what}: no connection to {listener.address} ({failure}); a network "
                "listener runs only with given: {network: sockets}"
            ) from None
        call["answer"] = "handshake refused" if knocked.handshake_refused else str(knocked.code)
        refused = argument.get("refused")
        if refused == "handshake":
            if not knocked.handshake_refused:
                raise StepFailed(f"{what}: {knocked}, expected the handshake refused")
        elif refused is not None:
            if knocked.handshake_refused or knocked.code != refused:
                raise StepFailed(f"{what}: {knocked}, expected {refused}")
        elif knocked.handshake_refused or knocked.status >= 400:
            raise StepFailed(f"{what}: {knocked}, expected it taken")
        return f"{what}: {knocked}"

    async def _revoke(self, argument: dict[str, Any]) -> str:
        from renkei.scenarios.certificates import Subject

        code = self._code(argument["party"])
        listed = self._presented().revoke(Subject(code, argument.get("system")))
        whose = argument["party"] + (f" {argument['system']}" if "system" in argument else "")
        return f"{whose} withdrawn: {listed}"
