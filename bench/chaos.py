"""A crash campaign: queries while the parties are killed with SIGKILL, then an audit.

``.venv/bin/python bench/chaos.py`` starts, in a temporary directory, the network in a box as
``make run`` does (every party in a process of its own under the supervisor: the hub, Meguro
and Setagaya over mutual TLS, SQLite, a generated demo population), then runs ``--flows``
queries (Meguro's care-insurance office asks Setagaya for a person's local-tax information,
``--concurrency`` at a time; with ``--bulk-share``, that share of them as the lines of bulk
queries of ``--bulk-lines`` lines) while it kills a random party with SIGKILL ``--kills``
times, each kill once the party killed before is ready again, and measures how long each
party takes to be ready after its kill. The back office behaves as a careful one would: it
submits under an Idempotency-Key and sends again (the same key) while the node does not
answer, and follows each query (each bulk query) through the node's restarts.

Campaign (b), ``--faults``: the same under faults on every link, put in force through the
control API (``renkei faults add``): drop 10 %, duplicate 10 %, corrupt 1 %, latency
50 ± 50 ms (messages overtake each other), reorder 10 % (held up to 0.2 s), and Setagaya
down (refusing connections) for ``--down-for`` seconds from a third of the way in.
Campaign (c), ``--cut``: the back office's own connection is cut during that share of its
submits (before the answer arrives), and it sends again under the same key.

Then it audits the databases (read-only): every query the back office was told of exists
once and ended ``provided``, no two queries came from one key, every transaction holds the
records it should at each party (Meguro: query accepted and result provided; Setagaya: the
provision; the hub: the query permitted and the provision relayed) and no more, every hash
chain verifies (``renkei records verify``) and no outbox message is left pending. It prints
the counts (lost, doubled) and exits 1 on any loss, doubling or stuck message. ``--quick``:
60 flows, 3 kills (what ``make test`` runs). Figures and what they mean: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for _path in (REPOSITORY, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from flows import (  # noqa: E402  (bench/flows.py: the generated population and configuration)
    CARE_INSURANCE,
    INFORMATION_NAME,
    LOCAL_TAX,
    MEGURO,
    PROCEDURE,
    SETAGAYA,
    write_box_config,
    write_population,
)

READY = "renkei ready"
FLOW_TIMEOUT = 180.0  # seconds a flow may take, restarts included
RETRY_PAUSE = 0.5  # seconds between two tries while the node does not answer


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/chaos.py",
        description="Queries while parties are killed with SIGKILL, then an audit: lost 0, "
        "doubled 0, every chain intact, no message stuck (docs/reliability.md).",
    )
    parser.add_argument("--flows", type=int, default=1000, help="queries to run (default 1000)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to send (default 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="queries in flight")
    parser.add_argument("--persons", type=int, default=100, help="demo persons (default 100)")
    parser.add_argument("--seed", type=int, default=20261204, help="the random seed")
    parser.add_argument("--quick", action="store_true", help="60 flows and 3 kills")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="campaign (b): drop 10 %%, duplicate 10 %%, corrupt 1 %%, latency 50 ± 50 ms, "
        "reorder 10 %% on every link, and Setagaya down for --down-for seconds",
    )
    parser.add_argument("--down-for", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--cut",
        type=float,
        default=0.0,
        help="campaign (c): the share of submits whose connection the back office cuts",
    )
    parser.add_argument(
        "--bulk-share", type=float, default=0.0, help="the share of flows sent in bulk queries"
    )
    parser.add_argument("--bulk-lines", type=int, default=50, help="lines per bulk query")
    parser.add_argument(
        "--meguro-processes",
        type=int,
        default=1,
        help="processes serving Meguro (more than one: --meguro-database is PostgreSQL)",
    )
    parser.add_argument(
        "--meguro-database", default=None, help="Meguro's database URL (default: SQLite)"
    )
    parser.add_argument(
        "--kill-only", default=None, help="kill only this party's processes (e.g. meguro)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.flows, arguments.kills, arguments.persons = 60, 3, 30
    return arguments


# -- the box ------------------------------------------------------------------------------------


class Box:
    """The supervised box in its own process group, and what its supervisor log says."""

    def __init__(self, directory: Path, config: Path) -> None:
        self.log = directory / "supervisor.log"
        self.logs = directory / "logs"
        twistd = Path(sys.executable).parent / "twistd"
        self.process = subprocess.Popen(
            [
                *(str(twistd), "-n", "--pidfile=", "-l", str(self.log)),
                *("renkei", "-c", str(config), "--log-dir", str(self.logs)),
            ],
            cwd=REPOSITORY,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(directory / "supervisor.stderr").open("wb"),
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text()):
            if self.process.poll() is not None:
                raise RuntimeError(f"the box exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {timeout:g} s")
            time.sleep(0.05)

    def pid(self, party: str) -> int:
        return int(re.findall(rf"started {party} \(pid (\d+)\)", self.text())[-1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def kill_campaign(
    box: Box, kills: int, rng: random.Random, parties: Sequence[str]
) -> list[dict[str, Any]]:
    """Kill a random one of ``parties`` (processes) ``kills`` times, each once the previous
    one is ready again; for each kill, the party and the seconds until the supervisor logged
    it ready again."""
    outcomes = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 1.5))
        party = rng.choice(list(parties))
        readies = box.text().count(f"{party} ready again")
        os.kill(box.pid(party), signal.SIGKILL)
        killed = time.monotonic()
        box.wait_for(
            lambda text, p=party, n=readies: text.count(f"{p} ready again") > n,
            120,
            f"{party} ready again",
        )
        outcomes.append({"party": party, "recovery": round(time.monotonic() - killed, 2)})
        print(f"    killed {party}: ready again after {outcomes[-1]['recovery']} s", flush=True)
    return outcomes


# -- the back office ----------------------------------------------------------------------------


def run_flows(
    config_path: Path, persons: list[str], arguments: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """The careful back office: ``arguments.flows`` queries, each submitted under its own
    key (sent again while the node does not answer, or after it cut the connection itself)
    and followed to its end, ``bulk_share`` of them as lines of bulk queries; what it was
    told."""
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
    from twisted.internet.task import deferLater, react

    from middleware.config import load_config
    from simulators.back_office import BackOfficeClient, BackOfficeError

    config = load_config(config_path)
    told: dict[str, Any] = {"queries": {}, "bulks": {}, "errors": Counter(), "retries": 0}
    told["cuts"] = 0
    rng = random.Random(seed)
    bulk_lines = int(arguments.flows * arguments.bulk_share)
    bulks = [arguments.bulk_lines] * (bulk_lines // arguments.bulk_lines)
    if bulk_lines % arguments.bulk_lines:
        bulks.append(bulk_lines % arguments.bulk_lines)
    singles = arguments.flows - sum(bulks)

    def cut(reactor: Any, sending: Deferred[Any]) -> Deferred[Any]:
        """Cut the connection of ``cut`` of the submits before their answer."""
        if rng.random() < arguments.cut:

            def cancel() -> None:
                if not sending.called:  # the answer has not arrived: the connection is cut
                    told["cuts"] += 1
                    sending.cancel()

            reactor.callLater(rng.uniform(0.0, 0.03), cancel)
        return sending

    async def flow(reactor: Any, client: BackOfficeClient) -> None:
        key = str(uuid.uuid4())
        body = {
            "integrated_address_number": rng.choice(persons),
            "procedure": PROCEDURE,
            "information_name": INFORMATION_NAME,
            "provider": SETAGAYA,
        }
        deadline = time.monotonic() + FLOW_TIMEOUT
        query_id = None
        while time.monotonic() < deadline:
            try:
                if query_id is None:
                    submitted = await cut(reactor, client.submit_query(idempotency_key=key, **body))
                    query_id = submitted["query_id"]
                status = await client.query_status(query_id, wait=20)
                if status["state"] in ("provided", "no_data", "refused", "error"):
                    told["queries"][query_id] = {"key": key, "state": status["state"]}
                    return
                continue
            except BackOfficeError as refusal:
                if refusal.status < 500:
                    told["errors"][refusal.code] += 1
                    return
            except Exception:
                pass  # the node restarting: not answering, connection refused or reset
            told["retries"] += 1
            await deferLater(reactor, RETRY_PAUSE, lambda: None)
        told["errors"]["timeout"] += 1
        if query_id is not None:
            told["queries"][query_id] = {"key": key, "state": "timeout"}

    async def bulk(reactor: Any, client: BackOfficeClient, lines: int) -> None:
        key = str(uuid.uuid4())
        csv = "".join(bulk_line(rng.choice(persons)) + "\r\n" for _ in range(lines))
        deadline = time.monotonic() + FLOW_TIMEOUT + lines
        bulk_id = None
        while time.monotonic() < deadline:
            try:
                if bulk_id is None:
                    answer = await cut(
                        reactor,
                        client.send_file(
                            "/bulk-queries", csv.encode("cp932"), "text/csv", idempotency_key=key
                        ),
                    )
                    bulk_id = json.loads(answer)["bulk_query_id"]
                progress = await client.request("GET", f"/bulk-queries/{bulk_id}")
                if progress["state"] == "ended":
                    told["bulks"][bulk_id] = {"key": key, "by_state": progress["by_state"]}
                    return
                await deferLater(reactor, 0.5, lambda: None)
                continue
            except BackOfficeError as refusal:
                if refusal.status < 500:
                    told["errors"][refusal.code] += 1
                    return
            except Exception:
                pass
            told["retries"] += 1
            await deferLater(reactor, RETRY_PAUSE, lambda: None)
        told["errors"]["timeout"] += 1
        if bulk_id is not None:
            told["bulks"][bulk_id] = {"key": key, "by_state": {"timeout": lines}}

    async def main(reactor: Any) -> None:
        client = BackOfficeClient(reactor, config, config.institution("meguro"), CARE_INSURANCE)
        gate = DeferredSemaphore(arguments.concurrency)
        works: list[int] = [0] * singles + bulks  # 0: a single query, else a bulk query's lines
        rng.shuffle(works)

        def start(lines: int) -> Deferred[None]:
            return Deferred.fromCoroutine(
                bulk(reactor, client, lines) if lines else flow(reactor, client)
            )

        try:
            await gatherResults([gate.run(start, lines) for lines in works], consumeErrors=True)
        finally:
            await client.close()

    try:
        react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as ended:
        if ended.code not in (0, None):
            raise
    told["errors"] = dict(told["errors"])
    told["bulk lines"] = sum(bulks)
    return told


def bulk_line(person: str) -> str:
    """One line of a bulk-query CSV (docs/bulk-query.md): ``person``'s local tax from
    Setagaya for care-insurance premium assessment, every year it keeps."""
    from types import SimpleNamespace

    from simulators.use_cases import bulk_query_line

    named = SimpleNamespace(address_number="", integrated_address_number=person)
    return bulk_query_line(named, MEGURO, SETAGAYA, datetime.now(), fiscal_year=None)  # type: ignore[arg-type]


def faults_campaign(config: Path, arguments: argparse.Namespace, began: float) -> list[str]:
    """Campaign (b): the faults on every link, through `renkei faults add`; Setagaya down
    for ``down_for`` seconds once a third of the expected time has gone. What was done."""
    renkei = str(Path(sys.executable).parent / "renkei")

    def faults(*command: str) -> str:
        done = subprocess.run(
            [renkei, "faults", *command, "-c", str(config)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"renkei faults {' '.join(command)}: {done.stderr}")
        return done.stdout.strip()

    done = [
        faults("add", "drop", "--probability", "0.1"),
        faults("add", "duplicate", "--probability", "0.1"),
        faults("add", "corrupt", "--probability", "0.01"),
        faults("add", "latency", "--latency", "50ms", "--jitter", "50ms"),
        faults("add", "reorder", "--probability", "0.1"),
    ]
    time.sleep(max(0.0, began + arguments.flows / 30 - time.monotonic()))
    down = faults("add", "down", "--to", "setagaya")  # f6
    done.append(f"{down} at {round(time.monotonic() - began)} s for {arguments.down_for:g} s")
    time.sleep(arguments.down_for)
    faults("clear", down.split(":")[0])
    return done


# -- the audit ----------------------------------------------------------------------------------


def read(database: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in the database at URL ``database`` (SQLite or PostgreSQL)."""
    from sqlalchemy import text

    from middleware.storage import create_database_engine

    engine = create_database_engine(database, pool_size=1)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


def audit(directory: Path, config: Path, told: dict[str, Any]) -> dict[str, Any]:
    """What the databases say once every party is quiet."""
    from middleware.config import load_config

    loaded = load_config(config)
    assert loaded.network is not None
    meguro, setagaya = (loaded.institution(name).database for name in ("meguro", "setagaya"))
    hub = loaded.network.database
    deadline = time.monotonic() + 120
    while True:
        pending = sum(
            read(database, "SELECT count(*) FROM outbox WHERE state = 'pending'")[0][0]
            for database in (meguro, setagaya, hub)
        )
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    queries = read(meguro, "SELECT query_id, idempotency_key, state, transaction_number FROM query")
    bulk_rows = read(meguro, "SELECT bulk_query_id, idempotency_key FROM bulk_query")
    lines = read(meguro, "SELECT bulk_query_id, state, query_id FROM bulk_query_line")
    keys = Counter(key for _, key, _, _ in queries if key is not None)
    bulk_keys = Counter(key for _, key in bulk_rows)
    line_queries = Counter(query_id for _, _, query_id in lines if query_id is not None)
    numbers = {number for _, _, state, number in queries if state == "provided"}
    told_bulks = set(told["bulks"])
    told_ids = set(told["queries"]) | {
        query_id for bulk_id, _, query_id in lines if bulk_id in told_bulks
    }
    stored_ids = {query_id for query_id, _, _, _ in queries}

    def records(database: str) -> Counter[str]:
        return Counter(
            number
            for (number,) in read(database, "SELECT transaction_number FROM provision_record")
            if number is not None
        )

    expected = {"meguro": 2, "setagaya": 1, "hub": 2}
    wrong_records = {
        name: sum(1 for number in numbers if counted[number] != expected[name])
        + sum(1 for number in counted if number not in numbers)
        for name, counted in (
            ("meguro", records(meguro)),
            ("setagaya", records(setagaya)),
            ("hub", records(hub)),
        )
    }
    verified = subprocess.run(
        [str(Path(sys.executable).parent / "renkei"), "records", "verify", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    lost = sum(1 for query in told["queries"].values() if query["state"] != "provided")
    lost += sum(1 for _, _, state, _ in queries if state != "provided")
    lost += len(told_ids - stored_ids)
    lost += sum(1 for bulk_id, state, _ in lines if bulk_id in told_bulks and state != "normal_end")
    lost += len(told_bulks - {bulk_id for bulk_id, _ in bulk_rows})
    doubled = sum(count - 1 for count in keys.values() if count > 1)
    doubled += sum(count - 1 for count in bulk_keys.values() if count > 1)
    doubled += sum(count - 1 for count in line_queries.values() if count > 1)
    doubled += len(stored_ids - told_ids)  # a query nobody was told of (a second one)
    doubled += len({bulk_id for bulk_id, _ in bulk_rows} - told_bulks)
    return {
        "queries told": len(told["queries"]),
        "bulk queries told": len(told["bulks"]),
        "bulk lines told": sum(1 for bulk_id, _, _ in lines if bulk_id in told_bulks),
        "queries stored": len(queries),
        "provided": len(numbers),
        "lost": lost,
        "doubled": doubled,
        "records wrong (meguro, setagaya, hub)": wrong_records,
        "chains": "intact" if verified.returncode == 0 else verified.stdout + verified.stderr,
        "outbox pending": pending,
        "back-office retries": told["retries"],
        "submits cut by the back office": told["cuts"],
        "back-office errors": told["errors"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    from crypto.pki import InstitutionEntry, init_pki

    rng = random.Random(arguments.seed)
    directory = Path(tempfile.mkdtemp(prefix="renkei-chaos-"))
    print(f"bench/chaos.py: temporary directory {directory}", flush=True)
    box = None
    started = time.monotonic()
    try:
        init_pki(
            directory / "pki",
            [
                InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
                InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
            ],
        )
        population = write_population(directory, arguments.persons)
        config = write_box_config(
            directory,
            directory / "pki",
            population.path,
            meguro_database=arguments.meguro_database,
            meguro_processes=arguments.meguro_processes,
        )
        from middleware.config import load_config
        from renkei.supervisor import parties_of

        targets = [
            party
            for party in parties_of(load_config(config))
            if arguments.kill_only is None or party.split(".")[0] == arguments.kill_only
        ]
        box = Box(directory, config)
        box.wait_for(lambda text: READY in text, 120, "readiness")
        print(
            f"1/2 {arguments.flows} queries ({arguments.bulk_share:.0%} in bulk queries), "
            f"{arguments.concurrency} in flight, while {arguments.kills} parties are killed"
            f"{', under faults' if arguments.faults else ''}"
            f"{f', {arguments.cut:.0%} of submits cut' if arguments.cut else ''} ...",
            flush=True,
        )
        import threading

        kills: list[dict[str, Any]] = []
        faults: list[str] = []
        began = time.monotonic()
        helpers = [
            threading.Thread(
                target=lambda: kills.extend(kill_campaign(box, arguments.kills, rng, targets))
            )
        ]
        if arguments.faults:
            helpers.append(
                threading.Thread(
                    target=lambda: faults.extend(faults_campaign(config, arguments, began))
                )
            )
        for helper in helpers:
            helper.start()
        told = run_flows(config, population.meguro_numbers, arguments, rng.randrange(2**32))
        elapsed = time.monotonic() - began
        for helper in helpers:
            helper.join()
        hits: list[str] = []
        if arguments.faults:
            for line in faults:
                print(f"    fault {line}", flush=True)
            listed = subprocess.run(
                [str(Path(sys.executable).parent / "renkei"), "faults", "list", "-c", str(config)],
                capture_output=True,
                text=True,
                check=True,
            )
            hits = listed.stdout.splitlines()
            subprocess.run(
                [str(Path(sys.executable).parent / "renkei"), "faults", "clear", "-c", str(config)],
                capture_output=True,
                check=True,
            )
        print("2/2 the audit ...", flush=True)
        report = audit(directory, config, told)
        report["kills"] = len(kills)
        report["recovery seconds (max)"] = max((k["recovery"] for k in kills), default=None)
        report["recovery seconds (mean)"] = (
            round(sum(k["recovery"] for k in kills) / len(kills), 2) if kills else None
        )
        report["killed"] = dict(Counter(k["party"] for k in kills))
        flows_done = len(told["queries"]) + report["bulk lines told"]
        report["faults"] = faults
        report["faults at the end (hits)"] = hits
        report["flows/s (kills included)"] = round(flows_done / elapsed, 1)
        report["elapsed"] = round(time.monotonic() - started, 1)
        print(json.dumps(report, ensure_ascii=False, indent=1))
        ok = (
            report["lost"] == 0
            and report["doubled"] == 0
            and not any(report["records wrong (meguro, setagaya, hub)"].values())
            and report["chains"] == "intact"
            and report["outbox pending"] == 0
            and flows_done == arguments.flows
        )
        print(f"lost {report['lost']}, doubled {report['doubled']}: {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        if box is not None:
            box.stop()
        if arguments.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
