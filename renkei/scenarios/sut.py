"""Systems under test: the actors of a scenario marked ``role: sut`` (as the SUT actors of
the EU ITB's GITB TDL), which the runner does not play but waits for (docs/scenarios.md).

Two kinds are run:

- a **back office** (``kind: back_office``): a vendor's business system talking to its node's
  back-office API. A ``query`` step ``as:`` it waits until a query from that back-office
  system matching the step (person, procedure, information name, provider) has been
  submitted at its node (`await_sut_query`), then captures it for the later steps;
- an **outside member** (``kind: intermediate_server``, ``party:`` an institution with
  ``external = true``, given by ``given: outside_members``): an intermediate server that is not
  renkei's, enrolled for the scenario as ``renkei pki enrol`` enrols one. It answers the
  provision requests the hub sends it; a ``query`` step ``as:`` it waits until its query has
  been received at the hub (the hub's provision records: requester, provider, procedure,
  information name, and the person's 符号 at the member, from the step's individual
  number) and captures it; its state is then the hub's (`seen_at_the_hub`): what the hub
  relayed to the member once the member has acknowledged it.

`SystemsUnderTest` starts each bound SUT (``renkei scenario run --sut ACTOR=COMMAND``) when
the scenario starts, with the environment variables of `told` telling it what it needs, and
stops it at the end; a SUT bound without a command (``--sut ACTOR``) is started by the
tester, who is shown what it needs, and waited for within the steps' timeouts. A scenario
with a SUT left unbound is skipped, saying which ``--sut`` it needs (`unbound`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from twisted.internet.task import deferLater

from adapters.network_link import host_and_port
from crypto.pki import PkiLayout, load_secret_key, server_name_of_hub, server_name_of_institution
from middleware.config import Config
from middleware.tables import hub_outbox, hub_query, hub_records, query
from renkei.scenarios.loading import Scenario
from renkei.scenarios.networks import member_folder
from renkei.scenarios.outcomes import StepFailed
from renkei.scenarios.targets import party_code, read_database

__all__ = [
    "BACK_OFFICE",
    "OUTSIDE_MEMBER",
    "Binding",
    "SystemsUnderTest",
    "await_sut_query",
    "parse_binding",
    "seen_at_the_hub",
    "sut_actors",
    "told",
    "unbound",
]

BACK_OFFICE = "back_office"
OUTSIDE_MEMBER = "intermediate_server"
LOOK_EVERY = 0.2  # seconds between two looks for a SUT's query
STOP_WAIT = 10.0  # seconds a SUT has to end after SIGTERM, before SIGKILL
LOG_LINES = 12  # lines of a SUT's output kept in the report


@dataclass(frozen=True)
class Binding:
    """How a SUT actor is started: ``command`` run by the runner, or (None) by the tester."""

    actor: str
    command: tuple[str, ...] | None

    def __str__(self) -> str:
        return self.actor if self.command is None else f"{self.actor}={shlex.join(self.command)}"


def parse_binding(text: str) -> Binding:
    """``ACTOR=COMMAND`` (a command line, split as a shell would) or ``ACTOR`` (the tester
    starts it); ValueError when it is neither."""
    actor, equals, command = text.partition("=")
    actor = actor.strip()
    if not actor:
        raise ValueError(f"--sut {text!r}: ACTOR=COMMAND or ACTOR")
    if not equals:
        return Binding(actor, None)
    words = tuple(shlex.split(command))
    if not words:
        raise ValueError(f"--sut {text!r}: no command after {actor}=")
    return Binding(actor, words)


def sut_actors(scenario: Scenario) -> dict[str, dict[str, Any]]:
    """The scenario's actors that are systems under test, by name."""
    return {
        name: declared
        for name, declared in scenario.actors.items()
        if declared.get("role") == "sut"
    }


def unbound(scenario: Scenario, bindings: Mapping[str, Binding]) -> str | None:
    """Why ``scenario`` cannot be run with ``bindings`` (a SUT actor none binds), or None."""
    missing = [name for name in sut_actors(scenario) if name not in bindings]
    if not missing:
        return None
    needs = " ".join(f"--sut {name}=COMMAND" for name in missing)
    return f"a system under test is not bound: needs {needs} (or --sut NAME to start it yourself)"


def _queries_of(scenario: Scenario, actor: str, config: Config) -> list[dict[str, Any]]:
    """The queries the scenario's steps expect ``actor`` to send, as it is told them."""
    outside = scenario.actors[actor]["kind"] == OUTSIDE_MEMBER
    asked = []
    for step in scenario.steps:
        argument = step.get("query")
        if not isinstance(argument, dict) or argument.get("as") != actor:
            continue
        one = {
            "individual_number" if outside else "integrated_address_number": argument["person"],
            "procedure": argument["procedure"],
            "information_name": argument["information_name"],
            "provider": party_code(config, argument["provider"]),
        }
        if "conditions" in argument:
            one["conditions"] = argument["conditions"]
        if "on_behalf_of" in argument:
            one["delegating_requester"] = party_code(config, argument["on_behalf_of"])
        asked.append(one)
    return asked


def told(config: Config, scenario: Scenario, actor: str) -> dict[str, str]:
    """What the SUT ``actor`` is told, as environment variables (docs/scenarios.md)."""
    declared = scenario.actors[actor]
    outside = {member.name for member in config.outside_members}
    outside |= {member.code for member in config.outside_members}
    if declared["kind"] == OUTSIDE_MEMBER and declared["party"] not in outside:
        raise LookupError(
            f"{actor}: {declared['party']}'s intermediate server is renkei's; one that is the "
            "system under test is an outside member (given.outside_members)"
        )
    if declared["kind"] not in (OUTSIDE_MEMBER, BACK_OFFICE):
        raise LookupError(f"{actor}: a {declared['kind']} cannot be the system under test")
    layout = PkiLayout(config.pki)
    common = {
        "RENKEI_SUT_ACTOR": actor,
        "RENKEI_SUT_QUERIES": json.dumps(_queries_of(scenario, actor, config), ensure_ascii=False),
        "RENKEI_CA": str(layout.ca().certificate),
    }
    if declared["kind"] == OUTSIDE_MEMBER:
        member = config.member(declared["party"])
        folder = member_folder(config.path.parent, member.name)
        _, port = host_and_port(member.network_address)
        return {
            **common,
            "RENKEI_SUT_KIND": "outside_member",
            "RENKEI_INSTITUTION_CODE": member.code,
            "RENKEI_MEMBER_FOLDER": str(folder),
            "RENKEI_CA": str(folder / "ca.pem"),
            "RENKEI_HUB_ADDRESS": config.hub_address,
            "RENKEI_HUB_SERVER_NAME": server_name_of_hub(),
            "RENKEI_LISTEN_INTERFACE": "127.0.0.1",
            "RENKEI_LISTEN_PORT": str(port),
        }
    institution = config.institution(declared["party"])
    system = declared.get("system") or institution.back_office_systems[0]
    client = layout.back_office_client(institution.code, system)
    return {
        **common,
        "RENKEI_SUT_KIND": "back_office",
        "RENKEI_INSTITUTION_CODE": institution.code,
        "RENKEI_SYSTEM": system,
        "RENKEI_BACK_OFFICE_ADDRESS": institution.back_office_address,
        "RENKEI_BACK_OFFICE_SERVER_NAME": server_name_of_institution(institution.code),
        "RENKEI_CLIENT_CERTIFICATE": str(client.certificate),
        "RENKEI_CLIENT_KEY": str(client.key),
    }


class SystemsUnderTest:
    """The SUT actors of one scenario's run: started (or announced to the tester) when it
    starts, stopped when it ends; `report` says what each was told and what became of it."""

    def __init__(
        self,
        reactor: Any,
        config: Config,
        scenario: Scenario,
        bindings: Mapping[str, Binding],
        tell: Callable[[str], None],
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._scenario = scenario
        self._bindings = bindings
        self._tell = tell
        self._started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._lines: list[str] = []

    def start(self) -> None:
        """Start each bound SUT with what it needs in its environment; show the tester what
        each SUT bound without a command needs."""
        for actor, declared in sut_actors(self._scenario).items():
            environment = told(self._config, self._scenario, actor)
            binding = self._bindings[actor]
            what = "an outside member" if declared["kind"] == OUTSIDE_MEMBER else "a back office"
            told_lines = [f"    {name}={value}" for name, value in sorted(environment.items())]
            if binding.command is None:
                self._tell(
                    f"{self._scenario.name}: start {actor} ({what}, the system under test) "
                    "now, with this environment; the steps wait for it within their timeouts:\n"
                    + "\n".join(told_lines)
                )
                self._lines.append(f"{actor} ({what}) started by the tester, told:")
            else:
                log = self._config.path.parent / f"sut-{actor}.log"
                with log.open("wb") as output:
                    process = subprocess.Popen(
                        binding.command,
                        env={**os.environ, **environment},
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group, stopped as one
                    )
                self._started[actor] = (process, log)
                self._lines.append(f"{actor} ({what}) started: {shlex.join(binding.command)}")
                self._lines.append("told:")
            self._lines += told_lines

    async def stop(self) -> None:
        """Stop every SUT the runner started (SIGTERM to its process group, SIGKILL if it
        has not ended within `STOP_WAIT`), noting how each ended and its last output."""
        for actor, (process, log) in self._started.items():
            ended = process.poll()
            if ended is None:
                _signal(process, signal.SIGTERM)
                waited = 0.0
                while process.poll() is None and waited < STOP_WAIT:
                    await deferLater(self._reactor, 0.1, lambda: None)
                    waited += 0.1
                if process.poll() is None:
                    _signal(process, signal.SIGKILL)
                    process.wait()
                self._lines.append(f"{actor} stopped at the end of the scenario")
            else:
                self._lines.append(f"{actor} ended by itself with status {ended}")
            output = log.read_text(encoding="utf-8", errors="replace").splitlines()
            if output:
                self._lines.append(f"{actor}'s last output:")
                self._lines += [f"    {line}" for line in output[-LOG_LINES:]]
        self._started.clear()

    def report(self) -> str:
        """What each SUT was told and what became of it, in words."""
        return "\n".join(self._lines)


def _signal(process: subprocess.Popen[bytes], number: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has ended already
        os.killpg(process.pid, number)


# -- a SUT's query, waited for -------------------------------------------------------------


async def await_sut_query(
    reactor: Any,
    config: Config,
    declared: Mapping[str, Any],
    argument: Mapping[str, Any],
    taken: set[str],
) -> tuple[dict[str, Any], str]:
    """Wait until the SUT ``declared`` has sent the query of the ``query`` step ``argument``
    (one not ``taken`` by an earlier step); what to capture of it, and what was seen."""
    provider = party_code(config, argument["provider"])
    if declared["kind"] == BACK_OFFICE:
        if "refused" in argument:
            raise StepFailed(
                "a back office's refused submission is its own to see; expect the state of a "
                "query it submitted instead"
            )
        institution = config.institution(declared["party"])
        system = declared.get("system") or institution.back_office_systems[0]
        asked = {
            "system": system,
            "integrated_address_number": argument["person"],
            "procedure": argument["procedure"],
            "information_name": argument["information_name"],
            "provider": provider,
        }
        (query_id,) = await _first_unseen(
            reactor, institution.database, query, ("query_id", "submitted_at"), asked, taken
        )
        return {"query_id": query_id}, f"query {query_id} submitted by {system}"
    member = config.member(declared["party"])
    if len(argument["person"]) != 12:
        raise StepFailed(
            f"{argument['person']}: the person of an outside member's query is named by "
            "their individual number (12 digits)"
        )
    assert config.network is not None
    fugo = await read_database(
        reactor, config.network.database, _fugo_at, config.pki, argument["person"], member.code
    )
    sent = {
        "event": "query",
        "requester": member.code,
        "provider": provider,
        "procedure": argument["procedure"],
        "information_name": argument["information_name"],
        "person": fugo,
    }
    number, status, code = await _first_unseen(
        reactor,
        config.network.database,
        hub_records,
        ("transaction_number", "seq", "status", "error_code"),
        sent,
        taken,
    )
    refused = argument.get("refused")
    if refused is not None and code != refused:
        raise StepFailed(f"the hub took it as {number} ({status} {code}), not {refused}")
    if refused is None and status == "refused":
        raise StepFailed(f"the hub refused it with {code} ({number})")
    seen = f"received at the hub as {number}" + (f", refused {code}" if code else "")
    return {"transaction_number": number, "at_the_hub": True}, seen


async def _first_unseen(
    reactor: Any,
    url: str,
    table: Any,
    columns: Sequence[str],
    values: Mapping[str, str],
    taken: set[str],
) -> tuple[Any, ...]:
    """Wait until ``table`` (in the database at ``url``) has a row with ``values`` whose key
    (the first of ``columns``) is not ``taken``: the first such row (by the second of
    ``columns``), its ``columns`` but the second; its key is then taken."""
    key, order, *others = columns

    def first(connection: Any) -> Any:
        return connection.execute(
            select(table.c[key], *(table.c[column] for column in others))
            .where(
                *(table.c[name] == value for name, value in values.items()),
                table.c[key].not_in(sorted(taken)),
            )
            .order_by(table.c[order])
            .limit(1)
        ).first()

    while True:
        row = await read_database(reactor, url, first)
        if row is not None:
            taken.add(str(row[0]))
            return (str(row[0]), *row[1:])
        await deferLater(reactor, LOOK_EVERY, lambda: None)


def _fugo_at(connection: Any, pki: Path, individual_number: str, institution: str) -> str:
    """The 符号 the hub issues to ``institution`` for the resident ``individual_number``."""
    from simulators.network import jukinet
    from simulators.network.fugo import FugoCipher, id_code

    layout = PkiLayout(pki)
    resident = jukinet.resident_code_of(connection, individual_number)
    person = id_code(resident, load_secret_key(layout.hub_idcode_key()))
    return FugoCipher(load_secret_key(layout.hub_fugo_key())).issue(person, institution)


async def seen_at_the_hub(reactor: Any, config: Config, number: str) -> dict[str, Any]:
    """The state of the query ``number`` an outside member sent, as the hub knows it, in the
    shape of a back office's query status: refused at the hub with its code; else the
    status of the provision the hub relayed once the member acknowledged it (``accepted``
    until then), with the records it carried when the member's key is in the PKI (a member
    enrolled with keys made by the network, as a scenario's is). The states are a renkei
    node's for the same provision (``provided``, ``no_data``, ``held``, ``refused``)."""
    from codes.catalogue import default_catalogue

    assert config.network is not None
    row, relayed = await read_database(reactor, config.network.database, _hub_view, number)
    if row is None:
        raise StepFailed(f"the hub has no query {number}")
    status: dict[str, Any] = {
        "state": "accepted",
        "transaction_number": number,
        "provider": row.provider,
        "error": None,
        "result": None,
        "result_deleted_at": None,
    }
    if row.state == "refused" and relayed is None:
        status["state"] = "refused"
        status["error"] = {"code": row.error_code}
        return status
    if relayed is None:
        return status
    from middleware import messages

    provision = messages.decode(relayed, messages.Provision)
    # As a renkei node takes a provision (middleware/requester.py): provided, no data or
    # held as it says; anything else refuses the query with its code.
    if provision.status in ("provided", "no_data", "held"):
        status["state"] = provision.status
    else:
        status["state"] = "refused"
        status["error"] = {"code": provision.error_code or "Unspecified"}
    keys = PkiLayout(config.pki).institution_encryption(row.requester)
    if provision.encrypted_payload is not None and keys.key.exists():
        from adapters.payload_view import describe_payload
        from crypto.envelope import open_envelope

        plaintext = open_envelope(provision.encrypted_payload, keys.load())
        status["result"] = describe_payload(default_catalogue(), plaintext)
    return status


def _hub_view(connection: Any, number: str) -> tuple[Any, bytes | None]:
    """The hub's query ``number`` and the last provision it delivered for it (if any)."""
    from middleware.outbox import DELIVERED

    row = connection.execute(
        select(hub_query).where(hub_query.c.transaction_number == number)
    ).first()
    delivered = connection.execute(
        select(hub_outbox.c.body)
        .where(
            hub_outbox.c.kind == "provision",
            hub_outbox.c.reference == number,
            hub_outbox.c.state == DELIVERED,
        )
        .order_by(hub_outbox.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return row, delivered
