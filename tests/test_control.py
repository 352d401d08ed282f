"""The control API (renkei/control.py, docs/control.md): one network clock and one set of
faults, moved and injected over loopback with a token, in one process and across the
supervised parties' processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.web.http_headers import Headers

from adapters.listening import Listener
from codes.errors import RenkeiError
from middleware.tables import node_records
from renkei.control import (
    ControlApi,
    Controller,
    NetworkState,
    parse_duration,
    parse_moment,
)
from simulators.faults import Fault
from tests.network import SETAGAYA
from tests.test_box_process import _alive, _pids, run, start_box, wait_for_log
from tests.test_flow import ask_tax, count, wait_until

TOKEN = "a-test-token"


@pytest_twisted.async_yield_fixture
async def control(box: Any, tmp_path: Path) -> AsyncIterator[tuple[Controller, str]]:
    """The control API of the in-memory box, on a loopback port; its controller and address."""
    from twisted.internet import reactor

    controller = Controller(reactor, {"box": box.member()}, tmp_path / "run")
    listener = Listener(
        reactor, "tcp:port=0:interface=127.0.0.1", ControlApi(controller, TOKEN).resource()
    )
    await listener.startService()
    try:
        yield controller, f"http://127.0.0.1:{listener.port}"
    finally:
        await listener.stopService()


async def call(
    address: str, method: str, path: str, body: Any = None, token: str = TOKEN
) -> tuple[int, Any]:
    response = await treq.request(
        method,
        address + path,
        data=None if body is None else json.dumps(body).encode(),
        headers=Headers({"Authorization": [f"Bearer {token}"]}),
    )
    return response.code, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_the_api_moves_every_partys_clock(box: Any, control: Any) -> None:
    """freeze, advance, set and resume through the API move the clock every party reads."""
    _, address = control
    meguro = box.nodes["meguro"]
    status, view = await call(address, "POST", "/clock/freeze", {})
    assert status == 200 and view["frozen"] and box.clock.frozen
    frozen = meguro.now()
    status, view = await call(address, "POST", "/clock/advance", {"seconds": 8 * 86400})
    assert status == 200
    assert (meguro.now() - frozen).total_seconds() == pytest.approx(8 * 86400, abs=1)
    assert set(view["parties"]) == {"hub", "meguro", "setagaya"}
    status, view = await call(address, "POST", "/clock/set", {"at": "2027-04-01T09:00+09:00"})
    assert status == 200
    assert meguro.now() == datetime(2027, 4, 1, 0, 0, tzinfo=UTC)
    assert view["now"] == "2027-04-01T00:00:00Z"
    assert view["now_jst"] == "2027-04-01T09:00:00+09:00"
    status, view = await call(address, "POST", "/clock/resume", {})
    assert status == 200 and not view["frozen"] and not box.clock.frozen


@pytest_twisted.ensureDeferred
async def test_advancing_the_clock_runs_the_timers_it_passes(
    box: Any, control: Any, meguro_care: Any
) -> None:
    """A result kept for an hour is deleted by Meguro's own sweep once the API moves the
    network's clock two hours on."""
    _, address = control
    submitted = await ask_tax(meguro_care)
    await meguro_care.wait_for_result(submitted["query_id"])
    await call(address, "POST", "/clock/advance", {"seconds": 7200})
    await wait_until(
        lambda: count(box, "meguro", node_records, node_records.c.event == "result_deleted") == 1
    )


@pytest_twisted.ensureDeferred
async def test_faults_are_added_listed_counted_and_cleared(
    box: Any, control: Any, meguro_care: Any
) -> None:
    """A fault added through the API is in force in the box's plan, hits the messages it
    matches (counted, each hit with its message id), and is gone once cleared."""
    _, address = control
    status, added = await call(
        address,
        "POST",
        "/faults",
        {"kind": "reset_peer", "source": SETAGAYA, "operation": "provision", "limit": 1},
    )
    assert status == 201 and added["name"] == "f1"
    assert [fault.kind for fault, _ in box.faults.faults().values()] == ["reset_peer"]
    submitted = await ask_tax(meguro_care)
    status_of = await meguro_care.wait_for_result(submitted["query_id"], timeout=30)
    assert status_of["state"] == "provided"
    status, listed = await call(address, "GET", "/faults")
    assert [(f["name"], f["kind"], f["hits"]) for f in listed["faults"]] == [
        ("f1", "reset_peer", 1)
    ]
    status, hits = await call(address, "GET", "/hits")
    assert [(hit["fault"], hit["operation"]) for hit in hits["hits"]] == [("f1", "provision")]
    assert hits["hits"][0]["message_id"]
    status, _ = await call(address, "DELETE", "/faults/f1")
    assert status == 200 and box.faults.faults() == {}
    status, refused = await call(address, "DELETE", "/faults/f1")
    assert status == 404 and refused["error"]["code"] == "UnknownFault"


@pytest_twisted.ensureDeferred
async def test_the_api_refuses_without_the_token_and_bad_requests_change_nothing(
    box: Any, control: Any
) -> None:
    """No token or a wrong one: 401 ControlUnauthorized; a fault of no known kind or with an
    unknown field, or a clock moved backwards by advance: 400 BadRequest; nothing changed."""
    controller, address = control
    status, refused = await call(address, "POST", "/clock/freeze", {}, token="wrong")
    assert status == 401 and refused["error"]["code"] == "ControlUnauthorized"
    assert refused["error"]["message_ja"]
    assert not box.clock.frozen
    fault: Any
    for fault in ({"kind": "meteor"}, {"kind": "drop", "blast_radius": 3}, {"kind": 1}, []):
        status, refused = await call(address, "POST", "/faults", fault)
        assert status == 400 and refused["error"]["code"] == "BadRequest", fault
    status, refused = await call(address, "POST", "/clock/advance", {"seconds": -5})
    assert status == 400 and refused["error"]["code"] == "BadRequest"
    status, refused = await call(address, "POST", "/clock/set", {"at": "tomorrow"})
    assert status == 400
    assert controller.state.generation == 0 and box.faults.faults() == {}


def test_the_state_and_the_faults_read_back_what_was_written(tmp_path: Path) -> None:
    """A network state written to its file (as a party's process reads it) reads back equal."""
    state = NetworkState(
        generation=3,
        faults={"f2": Fault("latency", destination=SETAGAYA, latency=0.05, jitter=0.05)},
        next_fault=3,
    )
    state.save(tmp_path / "state.json")
    assert NetworkState.load(tmp_path / "state.json") == state
    assert NetworkState.load(tmp_path / "missing.json") is None


def test_durations_and_moments_as_people_write_them() -> None:
    """8d, 1h30m, 50ms and bare seconds; ISO times with an offset, Japan time without."""
    assert parse_duration("8d") == 8 * 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("50ms") == pytest.approx(0.05)
    assert parse_duration("90") == 90
    for wrong in ("8 days", "d8", "", "1h 30m"):
        with pytest.raises(RenkeiError):
            parse_duration(wrong)
    assert parse_moment("2027-04-01T09:00+09:00") == parse_moment("2027-04-01T09:00")
    assert parse_moment("2027-04-01T00:00Z") == datetime(2027, 4, 1, tzinfo=UTC).timestamp()


def _times(output: str) -> dict[str, str]:
    """Each party's time in `renkei clock show`'s lines."""
    return {
        line.split()[0]: " ".join(line.split()[1:4])
        for line in output.splitlines()
        if line.startswith("  ")
    }


def test_clock_and_faults_reach_every_process_and_a_restarted_one(tmp_path: Path) -> None:
    """Parties as processes: `renkei clock freeze` and `advance 8d` put every party's
    process at the same time; Setagaya killed and restarted by the supervisor comes back at
    that time; a fault added with `renkei faults add` hits the hub's process and is counted
    there; `renkei faults clear` removes it."""
    config, log, box = start_box(tmp_path)
    conf = str(config.path)
    try:
        wait_for_log(log, box, "renkei ready")
        frozen = run("renkei", "clock", "freeze", "-c", conf)
        assert frozen.returncode == 0, frozen.stderr
        advanced = run("renkei", "clock", "advance", "8d", "-c", conf)
        assert advanced.returncode == 0, advanced.stderr
        assert ", frozen, " in advanced.stdout
        times = _times(advanced.stdout)
        assert set(times) == {"hub", "meguro", "setagaya"} and len(set(times.values())) == 1
        before = datetime.fromisoformat(_times(frozen.stdout)["hub"].removesuffix(" JST"))
        after = datetime.fromisoformat(times["hub"].removesuffix(" JST"))
        assert (after - before).total_seconds() == 8 * 86400

        (first,) = _pids(log, "setagaya")
        os.kill(first, signal.SIGKILL)
        wait_for_log(log, box, "setagaya ready again")
        shown = run("renkei", "clock", "show", "-c", conf)
        assert shown.returncode == 0, shown.stderr
        assert _times(shown.stdout) == times

        resumed = run("renkei", "clock", "set", "2026-12-01T09:00", "-c", conf)
        assert "2026-12-01 09:00:00 JST" in resumed.stdout
        assert run("renkei", "clock", "resume", "-c", conf).returncode == 0

        added = run("renkei", "faults", "add", "duplicate", "--from", "hub", "--to", "setagaya",
                    "--operation", "provision_request", "-c", conf)  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith(
            "f1: duplicate on hub → setagaya (世田谷区), provision_request, probability 1"
        )
        demo = run("renkei", "demo", "-c", conf)
        assert demo.returncode == 0 and "state: provided" in demo.stdout, demo.stdout
        listed = run("renkei", "faults", "list", "-c", conf)
        assert "f1: duplicate" in listed.stdout and "hit 1" in listed.stdout, listed.stdout
        hits = run("renkei", "faults", "hits", "-c", conf).stdout.splitlines()
        assert len(hits) == 1 and "f1 duplicate: provision_request" in hits[0]
        cleared = run("renkei", "faults", "clear", "-c", conf)
        assert cleared.returncode == 0 and "every fault removed" in cleared.stdout
        assert "no fault in force" in run("renkei", "faults", "list", "-c", conf).stdout
        bad = run("renkei", "faults", "add", "drop", "--to", "nerima", "-c", conf)
        assert bad.returncode == 2 and "no party 'nerima'" in bad.stderr
        unknown = run("renkei", "faults", "clear", "f9", "-c", conf)  # the control API's refusal
        assert unknown.returncode == 1 and unknown.stderr.startswith("error: UnknownFault: ")
        assert "renkei faults list" in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    finally:
        box.terminate()
        box.wait(timeout=30)


def test_clock_commands_without_a_running_box_say_so(tmp_path: Path) -> None:
    """`renkei clock show` with no box: status 1 and a sentence, not a traceback."""
    from tests.network import write_config

    config = write_config(tmp_path, tmp_path / "pki")
    result = run("renkei", "clock", "show", "-c", str(config.path))
    assert result.returncode == 1
    assert "NetworkUnavailable" in result.stderr and "make run" in result.stderr
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def running_processes(directory: Path) -> Iterator[tuple[Any, Path]]:
    """A box of processes (`start_box`) in ``directory``, ready; its configuration and
    supervisor's log; stopped afterwards."""
    config, log, box = start_box(directory)
    try:
        wait_for_log(log, box, "renkei ready")
        yield config, log
    finally:
        box.terminate()
        box.wait(timeout=30)


def _api(config: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to a running box's control API (from a test outside the reactor)."""
    import urllib.error
    import urllib.request

    from renkei.control import read_token

    assert config.control is not None
    request = urllib.request.Request(
        config.control.address + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {read_token(config.control.token)}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=150) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refusal:
        return refusal.code, json.loads(refusal.read())


def _party(listed: str, name: str) -> list[str]:
    """The words of ``name``'s line in `renkei party list`."""
    (line,) = [line for line in listed.splitlines() if line.split()[0] == name]
    return line.split()


def test_a_party_stopped_stays_down_until_started_and_a_killed_one_comes_back(
    tmp_path: Path,
) -> None:
    """Parties as processes: `renkei party stop setagaya` ends its process (SIGTERM) and the
    supervisor leaves it stopped; `renkei party start setagaya --wait` brings it back ready
    and the network answers again; `renkei party kill meguro --wait` (SIGKILL) is a crash
    the supervisor recovers from with a new process; killing a stopped party or naming an
    unknown one ends with one line and status 1."""
    with running_processes(tmp_path) as (config, log):
        conf = str(config.path)
        listed = run("renkei", "party", "list", "-c", conf)
        assert listed.returncode == 0, listed.stderr
        assert [line.split()[:2] for line in listed.stdout.splitlines()] == [
            ["hub", "running"], ["meguro", "running"], ["setagaya", "running"]
        ]  # fmt: skip
        assert "ready since" in listed.stdout and "JST" in listed.stdout
        (setagaya,) = _pids(log, "setagaya")

        stopped = run("renkei", "party", "stop", "setagaya", "-c", conf)
        assert stopped.returncode == 0, stopped.stderr
        assert not _alive(setagaya)
        time.sleep(2)  # more than the supervisor's restart delay: it stays down
        assert _party(run("renkei", "party", "list", "-c", conf).stdout, "setagaya")[:3] == [
            "setagaya", "stopped", "no"
        ]  # fmt: skip
        assert _pids(log, "setagaya") == [setagaya]
        refused = run("renkei", "party", "kill", "setagaya", "-c", conf)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.count("\n") == 1 and "PartyNotRunning" in refused.stderr

        started = run("renkei", "party", "start", "setagaya", "--wait", "-c", conf)
        assert started.returncode == 0, started.stderr
        assert "ready since" in started.stdout and len(_pids(log, "setagaya")) == 2

        (meguro,) = _pids(log, "meguro")
        killed = run("renkei", "party", "kill", "meguro", "--wait", "-c", conf)
        assert killed.returncode == 0, killed.stderr
        assert "killed and started again" in killed.stdout and "ready since" in killed.stdout
        assert not _alive(meguro) and _alive(_pids(log, "meguro")[-1])
        assert "meguro ended" in log.read_text()

        demo = run("renkei", "demo", "-c", conf)
        assert demo.returncode == 0 and "state: provided" in demo.stdout, demo.stdout
        unknown = run("renkei", "party", "stop", "nerima", "-c", conf)
        assert unknown.returncode == 1 and "UnknownParty" in unknown.stderr
        assert "hub, meguro, setagaya" in unknown.stderr


def test_capture_on_appends_each_exchange_to_its_processs_file(tmp_path: Path) -> None:
    """With capture on (`POST /capture`), each party's process appends each exchange it
    sends to a file of its own in the run directory (mode 0600), one JSON line with the
    request and the answer: the demo's query, provision request and provision both ways,
    each a schema-valid message; once off, nothing more is appended."""
    from simulators.capture import check_exchange, read_captured

    with running_processes(tmp_path) as (config, _):
        status, view = _api(config, "GET", "/capture")
        assert status == 200 and view["capture"] is False
        directory = Path(view["directory"])
        assert directory == tmp_path / "var" / "run" / "capture"
        status, view = _api(config, "POST", "/capture", {"on": True})
        assert status == 200 and view["capture"] is True
        assert set(view["reached"]) == {"hub", "meguro", "setagaya"}

        demo = run("renkei", "demo", "-c", str(config.path))
        assert demo.returncode == 0 and "state: provided" in demo.stdout, demo.stdout
        wait_until_sync(lambda: _api(config, "GET", "/capture")[1]["in_flight"] == 0)
        status, _ = _api(config, "POST", "/capture", {"on": False})
        assert status == 200
        files = sorted(path.name for path in directory.iterdir())
        assert files == ["hub.jsonl", "meguro.jsonl", "setagaya.jsonl"]
        captured = {}
        for path in directory.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600
            captured[path.stem], _ = read_captured(path)
        links = sorted(
            (exchange.source, exchange.operation)
            for exchanges in captured.values()
            for _, exchange in exchanges
            if exchange.operation in ("query", "provision_request", "provision")
        )
        assert links == [
            ("1131105000000000", "query"),
            ("1131121000000000", "provision"),
            ("hub", "provision"),
            ("hub", "provision_request"),
        ]
        for exchanges in captured.values():
            for _, exchange in exchanges:
                assert exchange.request and exchange.answer and not check_exchange(exchange)
        sizes = {path.name: path.stat().st_size for path in directory.iterdir()}
        again = run("renkei", "demo", "-c", str(config.path))
        assert again.returncode == 0
        assert {path.name: path.stat().st_size for path in directory.iterdir()} == sizes


def wait_until_sync(condition: Any, timeout: float = 10) -> None:
    """Until ``condition()`` holds (a test outside the reactor)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


@pytest_twisted.ensureDeferred
async def test_in_one_process_a_partys_life_is_refused_and_capture_switches(
    box: Any, control: Any
) -> None:
    """Every party in one process (the control API without a supervisor): `/parties` is
    refused with 409 PartiesInOneProcess; capture switches on and off for the box (a bad
    switch is 400 BadRequest); the clock is set back to real time by its offset."""
    controller, address = control
    for method, path in (("GET", "/parties"), ("POST", "/parties/meguro/stop")):
        status, refused = await call(address, method, path, {} if method == "POST" else None)
        assert status == 409 and refused["error"]["code"] == "PartiesInOneProcess"
        assert refused["error"]["message_ja"]
    status, refused = await call(address, "POST", "/capture", {"on": "yes"})
    assert status == 400 and refused["error"]["code"] == "BadRequest"
    status, view = await call(address, "POST", "/capture", {"on": True})
    assert status == 200 and view["capture"] and controller.state.capture
    status, view = await call(address, "POST", "/clock/advance", {"seconds": 3600})
    assert view["offset"] == pytest.approx(3600, abs=1)
    status, view = await call(address, "POST", "/clock/set", {"offset": 0})
    assert status == 200 and view["offset"] == pytest.approx(0, abs=0.1)
    assert abs(view["seconds"] - box.reactor.seconds()) < 0.5
    status, refused = await call(address, "POST", "/clock/set", {"offset": "soon"})
    assert status == 400
