"""What a back office does in a scenario, through its node's back-office API over mutual TLS
(adapters/back_office_api.py, simulators/back_office.py): register a person, register a
副本 record or load a 副本 file, post a bulk-query file and read its result, make any raw
request (``call``); and the given state a back office relies on (residents at the 住基ネット
simulator, a generated population).

`BackOfficeSteps` holds these steps for `renkei.scenarios.conversation.Conversation`, one
``_KIND`` method per step kind as there. Each step notes its request for the report, checks
the answer against what the step expects, and captures what a later step may use
(``${NAME}``, renkei/scenarios/templating.py).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from twisted.internet.task import deferLater

from adapters.care_insurance import bulk_query, replica_file
from middleware.config import Config
from middleware.replica import JST
from renkei.scenarios.loading import Scenario
from renkei.scenarios.outcomes import StepFailed
from renkei.scenarios.targets import Target, party_code, read_database
from renkei.scenarios.templating import Captured
from simulators.back_office import Answer, BackOfficeClient, BackOfficeError
from simulators.network import jukinet
from simulators.population import DEFAULT_SEED

__all__ = ["PERSON_WAIT", "BackOfficeSteps", "matches"]

PERSON_WAIT = 20.0  # seconds a registration waits for the 符号 (below a step's 30 s)
POLL = 0.05  # seconds between two looks at a bulk query's progress
POLL_AGAIN = 0.2  # seconds between two asks of a `call` that is to hold eventually


class BackOfficeSteps:
    """The back offices' steps of a conversation (mixed into it: its actors, target,
    captured values and notes of requests)."""

    _reactor: Any
    _scenario: Scenario
    target: Target
    config: Config
    captured: dict[str, dict[str, Any]]
    variables: dict[str, Captured]

    def _client(self, actor: str) -> BackOfficeClient:
        raise NotImplementedError

    def _note(self, actor: str, party: str, what: str) -> dict[str, Any]:
        raise NotImplementedError

    def _party(self, actor: str) -> str:
        return str(self._scenario.actors[actor]["party"])

    def _system(self, actor: str) -> str:
        declared = self._scenario.actors[actor]
        return str(
            declared.get("system")
            or self.config.institution(declared["party"]).back_office_systems[0]
        )

    def _capture(self, name: str, value: Any, id: Any, actor: str | None = None) -> None:
        self.captured.pop(name, None)
        self.variables[name] = Captured(value, id, actor)

    # -- the given state ----------------------------------------------------------------

    async def _given_residents(self, residents: list[str]) -> None:
        """The 個人番号 of ``residents`` known to the 住基ネット simulator (the hub's
        database: the network's own registry), as a person's moving in would make them."""
        assert self.config.network is not None
        await read_database(
            self._reactor,
            self.config.network.database,
            jukinet.register_residents,
            residents,
            write=True,
        )

    def _given_population(self, size: str) -> None:
        """The generated population (docs/population.md) of ``size``, of the default seed: the
        box of the run loaded it at its start; a running network must have loaded it."""
        loaded = self.config.population
        if loaded is None or (loaded.size, loaded.seed) != (size, DEFAULT_SEED):
            has = "none" if loaded is None else f"{loaded.size}, seed {loaded.seed}"
            raise StepFailed(
                f"the scenario needs the population {size} of seed {DEFAULT_SEED}; "
                f"the network has {has}"
            )

    # -- persons ----------------------------------------------------------------------------

    async def _register(self, argument: dict[str, Any]) -> str:
        actor = argument["as"]
        party = self._party(actor)
        refused = argument.get("refused")
        note = self._note(actor, party, "POST /persons")
        try:
            answer = await self._client(actor).register_person(
                argument.get("person"),
                argument["individual_number"],
                PERSON_WAIT,
                argument.get("address_number"),
            )
        except BackOfficeError as refusal:
            note["answer"] = refusal.code
            return refused_as(refusal, refused)
        number, state = answer["integrated_address_number"], answer["fugo_state"]
        note["answer"] = f"{number} ({state})"
        if refused is not None:
            raise StepFailed(f"registered as {number}, expected {refused}")
        if "person" in argument and number != argument["person"]:
            raise StepFailed(f"registered as {number}, not as {argument['person']}")
        if state != "acquired":
            raise StepFailed(f"{number} registered, its 符号 still {state}")
        if "capture" in argument:
            self._capture(argument["capture"], answer, number, actor)
        return f"{number} registered at {party}, its 符号 acquired"

    # -- 副本 -------------------------------------------------------------------------------

    async def _record(self, argument: dict[str, Any]) -> str:
        record = argument["record"]
        note = self._note(argument["as"], self._party(argument["as"]), "POST /replica-records")
        try:
            await self._client(argument["as"]).register_replica_record(record)
        except BackOfficeError as refusal:
            if refusal.code != "RecordIdExists" or self.target.fresh:
                raise
            note["answer"] = "there already (an earlier run)"
            return f"副本 record {record['record_id']} there already"
        note["answer"] = "registered"
        return f"副本 record {record['record_id']} registered"

    async def _load(self, argument: dict[str, Any]) -> str:
        actor = argument["as"]
        party = self._party(actor)
        if "file" in argument:
            path = self._scenario.path.parent / argument["file"]
            try:
                document = path.read_bytes()
            except OSError as failure:
                raise StepFailed(f"the file {argument['file']} cannot be read: {failure}") from None
        else:
            document = self._replica_file(argument, actor)
        refused = argument.get("refused")
        note = self._note(actor, party, "POST /replica-files")
        try:
            answer = await self._client(actor).send_file(
                "/replica-files", document, "application/xml"
            )
        except BackOfficeError as refusal:  # not about the file: its size, the certificate
            note["answer"] = refusal.code
            return refused_as(refusal, refused)
        result = replica_file.read_result_file(answer)
        if result.file_error is not None:
            note["answer"] = result.file_error
            if result.file_error != refused:
                raise StepFailed(
                    f"the file was refused whole with {result.file_error}, expected "
                    + (refused or "its entries' results")
                )
            return f"the file refused whole with {result.file_error}"
        seen = [
            (record_id, status if code is None else code)
            for _, record_id, status, code in result.entries
        ]
        counted = Counter(outcome for _, outcome in seen)
        note["answer"] = ", ".join(f"{count} {outcome}" for outcome, count in counted.items())
        if refused is not None:
            raise StepFailed(
                f"the file was processed (MSGResult {result.message_result}), expected {refused}"
            )
        said = f"{len(seen)} entries: " + note["answer"]
        if "results" in argument:
            before = self._check_results(argument["results"], seen)
            if before:
                said += f" ({before} stored or deleted already, by an earlier run)"
        return said

    def _replica_file(self, argument: dict[str, Any], actor: str) -> bytes:
        """The 副本 file of a ``load`` step's inline ``records``."""
        entries = [
            replica_file.Entry(
                number=number,
                record_id=record["record_id"],
                integrated_address_number=record["integrated_address_number"],
                information_name=record["information_name"],
                data_set=record["data_set"],
                data_set_record_key=record.get("data_set_record_key"),
                major_version=record.get("major_version"),
                parent_record_key=record.get("parent_record_key"),
                publication_date=record.get("publication_date"),
                published_end_date=record.get("published_end_date"),
                suppressed=record.get("auto_response_suppressed", False),
                items=dict(record.get("items", {})),
            )
            for number, record in enumerate(argument["records"], start=1)
        ]
        return replica_file.build_replica_file(
            entries,
            f"scenario-{uuid.uuid4().hex[:20]}",
            deletion=argument.get("delete", False),
            test_mode=argument.get("test_mode", False),
            destination=party_code(self.config, argument.get("to", self._party(actor))),
            source_system=self._system(actor),
        )

    def _check_results(self, wanted: Any, seen: list[tuple[str, str]]) -> int:
        """The entries' outcomes (a status, or the code of a refusal) against ``wanted``:
        one per entry in order, or by record id (a list for an id that several entries
        have). Against a network of an earlier run, an entry found stored or deleted
        already is what was wanted: how many were is returned."""
        if isinstance(wanted, list):
            if len(wanted) != len(seen):
                raise StepFailed(f"{len(seen)} entries in the result file, expected {len(wanted)}")
            expected = list(wanted)
        else:
            queues = {
                record_id: list(value) if isinstance(value, list) else [value]
                for record_id, value in wanted.items()
            }
            expected = []
            for record_id, _ in seen:
                if not queues.get(record_id):
                    raise StepFailed(
                        f"the result file has an entry {record_id} the step does not name"
                    )
                expected.append(queues[record_id].pop(0))
            missing = [record_id for record_id, queue in queues.items() if queue]
            if missing:
                named = ", ".join(missing)
                raise StepFailed(f"the result file has fewer entries {named} than expected")
        before = 0
        pairs = zip(seen, expected, strict=True)
        for number, ((record_id, outcome), want) in enumerate(pairs, start=1):
            if not self.target.fresh and (want, outcome) in (
                (replica_file.STORED, "RecordIdExists"),
                (replica_file.DELETED, "UnknownRecord"),
            ):
                before += 1
            elif outcome != want:
                raise StepFailed(f"entry {number} ({record_id}) is {outcome}, expected {want}")
        return before

    # -- any request ------------------------------------------------------------------------

    async def _call(self, argument: dict[str, Any]) -> str:
        """A back office's request as it is; with ``eventually``, asked again (every
        `POLL_AGAIN` seconds, within the step's timeout) until its answer holds: what the
        node comes to know by itself (how a notice stands after the next status check)."""
        while True:
            try:
                return await self._call_once(argument)
            except StepFailed:
                if not argument.get("eventually"):
                    raise
            await deferLater(self._reactor, POLL_AGAIN, lambda: None)

    async def _call_once(self, argument: dict[str, Any]) -> str:
        actor = argument["as"]
        method, path = argument.get("method", "GET"), argument["path"]
        data: bytes | None = None
        content_type = argument.get("content_type", "application/json")
        if "json" in argument:
            data = json.dumps(argument["json"], ensure_ascii=False).encode()
        elif "text" in argument:
            data = argument["text"].encode("utf-8")
            content_type = argument.get("content_type", "text/plain; charset=utf-8")
        note = self._note(actor, self._party(actor), f"{method} {path}")
        answer = await self._client(actor).send(
            method,
            path,
            data,
            content_type,
            headers=argument.get("headers"),
            declared_length=argument.get("declared_length"),
        )
        body = _decoded(answer)
        code = _error_code(answer, body)
        note["answer"] = code or str(answer.status)
        said = f"{method} {path}: {answer.status}" + (f" {code}" if code else "")
        if "status" in argument and answer.status != argument["status"]:
            raise StepFailed(f"{said}, expected status {argument['status']}")
        refused = argument.get("refused")
        if refused is not None and code != refused:
            raise StepFailed(f"{said}, expected {refused}")
        if refused is None and "status" not in argument and answer.status >= 400:
            raise StepFailed(said + (f": {body['error']['message_en']}" if code else ""))
        if "answer" in argument:
            problem = matches(argument["answer"], body, "the answer")
            if problem:
                raise StepFailed(f"{said}; {problem}")
        if "capture" in argument:
            self._capture(argument["capture"], body, body, actor)
        return said

    # -- bulk queries -----------------------------------------------------------------------

    async def _bulk_query(self, argument: dict[str, Any]) -> str:
        from middleware.clock import utc_now

        actor = argument["as"]
        client = self._client(actor)
        requester = self.config.institution(self._party(actor))
        asked_at = utc_now(self.target.clock).astimezone(JST).replace(tzinfo=None)
        rows = [
            line["raw"]
            if "raw" in line
            else _bulk_line(
                line,
                requester.code,
                party_code(self.config, line["provider"]),
                self.target.catalogue.procedure(line["procedure"]).affair,
                asked_at,
            )
            for line in argument["lines"]
        ]
        encoding = "utf-8" if argument.get("encoding") == "utf-8" else "cp932"
        refused = argument.get("refused")
        note = self._note(actor, requester.name, "POST /bulk-queries")
        try:
            answer = await client.send_file(
                "/bulk-queries", ("\r\n".join(rows) + "\r\n").encode(encoding), "text/csv"
            )
        except BackOfficeError as refusal:
            note["answer"] = refusal.code
            return refused_as(refusal, refused)
        bulk_id = json.loads(answer)["bulk_query_id"]
        note["answer"] = f"accepted {bulk_id}"
        if refused is not None:
            raise StepFailed(f"accepted as bulk query {bulk_id}, expected {refused}")
        if "capture" in argument:
            self._capture(argument["capture"], json.loads(answer), bulk_id, actor)
        if not argument.get("wait", True):
            return f"bulk query {bulk_id} accepted"
        progress = await self._bulk_progress(client, bulk_id, "ended")
        if "capture" in argument:
            self._capture(argument["capture"], progress, bulk_id, actor)
        ended = {state: count for state, count in progress["by_state"].items() if count}
        if "ended" in argument:
            wanted = {state: count for state, count in argument["ended"].items() if count}
            if ended != wanted:
                raise StepFailed(f"the lines ended {ended}, expected {wanted}")
        if "result" in argument:
            result = await client.send("GET", f"/bulk-queries/{bulk_id}/result", None)
            if result.status != 200:
                raise StepFailed(
                    f"its result file: {result.status} {_error_code(result, _decoded(result))}"
                )
            _check_result_lines(argument["result"], result)
            return f"bulk query {bulk_id} ended: {ended}; its result file's lines as expected"
        return f"bulk query {bulk_id} ended: {ended}"

    async def _bulk_progress(
        self, client: BackOfficeClient, bulk_id: str, state: str
    ) -> dict[str, Any]:
        """A bulk query's progress once it is in ``state`` (running or ended)."""
        while True:
            progress: dict[str, Any] = await client.request("GET", f"/bulk-queries/{bulk_id}")
            if progress["state"] == state:
                return progress
            await deferLater(self._reactor, POLL, lambda: None)

    async def _wait_for_bulk_query(self, name: str, state: str) -> str:
        """Until the bulk query captured as ``name`` is in ``state`` (a ``wait`` step)."""
        captured = self.variables.get(name)
        if captured is None or captured.actor is None or "bulk_query_id" not in captured.value:
            raise StepFailed(f"no bulk query was captured as {name!r}")
        if state not in ("running", "ended"):
            raise StepFailed(f"a bulk query is running or ended, never {state}")
        progress = await self._bulk_progress(self._client(captured.actor), captured.id, state)
        self._capture(name, progress, captured.id, captured.actor)
        return f"bulk query {captured.id} is {progress['state']}: {progress['by_state']}"


def refused_as(refusal: BackOfficeError, refused: str | None) -> str:
    """What a step says of a refusal it expected (``refused``); StepFailed when it expected
    another or none."""
    if refused is None:
        message = refusal.error.get("message_en")
        raise StepFailed(f"refused with {refusal.code} (HTTP {refusal.status}): {message}")
    if refusal.code != refused:
        raise StepFailed(f"refused with {refusal.code}, expected {refused}")
    return f"refused with {refusal.code} (HTTP {refusal.status})"


def matches(wanted: Any, seen: Any, where: str) -> str | None:
    """Why ``seen`` does not hold ``wanted`` (a mapping's keys may be a part of those
    seen; lists and other values must be equal), or None."""
    if isinstance(wanted, dict):
        if not isinstance(seen, dict):
            return f"{where} is {seen!r}, expected an object"
        for key, value in wanted.items():
            if key not in seen:
                return f"{where} has no {key!r}"
            problem = matches(value, seen[key], f"{where}.{key}")
            if problem:
                return problem
        return None
    if isinstance(wanted, list):
        if not isinstance(seen, list) or len(seen) != len(wanted):
            return f"{where} is {seen!r}, expected {len(wanted)} items"
        for index, (value, item) in enumerate(zip(wanted, seen, strict=True)):
            problem = matches(value, item, f"{where}[{index}]")
            if problem:
                return problem
        return None
    return None if wanted == seen else f"{where} is {seen!r}, expected {wanted!r}"


def _decoded(answer: Answer) -> Any:
    """An answer's body: its JSON, or its text."""
    if answer.content_type.startswith("application/json"):
        try:
            return json.loads(answer.body)
        except ValueError:
            pass
    return answer.body.decode("utf-8", "replace")


def _error_code(answer: Answer, body: Any) -> str | None:
    if answer.status >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code"))
    return None


def _bulk_line(
    line: dict[str, Any], requester: str, provider: str, affair: str, asked_at: Any
) -> str:
    """One line of the 18-field bulk-query CSV for a line of a ``bulk_query`` step: the
    person by 統合宛名番号 (番号体系 01) or by 宛名番号 (02)."""
    values = [""] * len(bulk_query.FIELDS)
    if "address_number" in line:
        values[bulk_query.NUMBER_SYSTEM] = bulk_query.ADDRESS_NUMBER_SYSTEM
        values[bulk_query.ADDRESS_NUMBER] = line["address_number"]
    else:
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
    kind = 0
    if "fiscal_year" in line:
        kind += 1
        values[bulk_query.FISCAL_YEAR] = f"{line['fiscal_year']:04d}"
    if "period_start" in line or "period_end" in line:
        kind += 2
        values[bulk_query.PERIOD_START] = str(line.get("period_start", "")).replace("-", "")
        values[bulk_query.PERIOD_END] = str(line.get("period_end", "")).replace("-", "")
    if kind:
        values[bulk_query.CONDITION_KIND] = str(kind)
    return ",".join(values)


def _result_lines(result: Answer) -> Iterator[dict[str, str]]:
    """The lines of a bulk query's result file (docs/bulk-query.md §3), by column name."""
    encoding = "cp932" if "shift_jis" in result.content_type else "utf-8-sig"
    yield from csv.DictReader(io.StringIO(result.body.decode(encoding), newline=""))


def _check_result_lines(wanted: list[dict[str, Any]], result: Answer) -> None:
    """A bulk query's result file against a ``bulk_query`` step's ``result``: per line in
    order, its state, error code, number of records provided and their items."""
    lines = list(_result_lines(result))
    if len(lines) != len(wanted):
        raise StepFailed(f"the result file has {len(lines)} lines, expected {len(wanted)}")
    for line, want in zip(lines, wanted, strict=True):
        where = f"result line {line['行番号']}"
        code = bulk_query.STATE_CODES[want["state"]][0] if "state" in want else None
        if code is not None and line["処理結果コード"] != code:
            raise StepFailed(
                f"{where}: 処理結果コード {line['処理結果コード']} ({line['処理結果']}), "
                f"expected {code} ({want['state']})"
            )
        if "error" in want and (line["エラーコード"] or None) != want["error"]:
            raise StepFailed(
                f"{where}: エラーコード {line['エラーコード'] or None}, expected {want['error']}"
            )
        provided = json.loads(line["提供情報"]) if line["提供情報"] else []
        if "record_count" in want and len(provided) != want["record_count"]:
            raise StepFailed(
                f"{where}: {len(provided)} records provided, expected {want['record_count']}"
            )
        by_id = {record["record_id"]: record["items"] for record in provided}
        for record_id, items in want.get("records", {}).items():
            if record_id not in by_id:
                raise StepFailed(f"{where}: record {record_id} not provided")
            problem = matches(items, by_id[record_id], f"{where}: record {record_id}")
            if problem:
                raise StepFailed(problem)
