"""The nation in one box: the hub, every municipality and the pension and welfare
institutions in one process, on the in-memory network, under a traffic mix after FY2022's.

``.venv/bin/python bench/national.py`` runs the hub, 1,741 municipalities (1,718 市町村 and the
23 特別区), the pension institution and the welfare office of twistd.conf in this process,
each an `IntermediateServer` with its own SQLite database, its own keys and its own slice of
persons, linked by `simulators.in_memory.InMemoryNetwork` (no sockets; real XML, signatures,
CMS envelopes and databases). Back offices are the nodes' Python API (``node.requester``),
so no back-office listener is opened. Figures: the RSS of the process, the time until every
party is ready, flows/s over a measured window, the errors (every flow must end
``provided``; exit status 1 if one did not) and the machine. What each figure means and the
figures of a full run are in docs/performance.md ("The nation in one box").

The municipality codes are synthetic (check digits valid, evenly spread over the 47
prefectures; the 23 special wards are 13101-13123), the mix of the traffic is emulated (see
`MIX`), and the periodic jobs run at the intervals of `JOB_INTERVALS` (measured: at the
intervals of twistd.conf, 1,741 idle nodes would need about 3.5 cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for _path in (REPOSITORY, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from flows import (  # noqa: E402  (bench/flows.py: the machine, CPU accounting)
    CpuWindow,
    _raise_keyboard_interrupt,
    machine,
    milliseconds,
    percentile,
)

MUNICIPALITIES = 1741  # 1,718 市町村 and 23 特別区 (SOURCES.md: about 1,741)
SPECIAL_WARDS = 23  # 13101-13123
PREFECTURES = 47
PENSION = "3000000000000001"  # 年金事務機関 of twistd.conf (emulated code)
WELFARE = "2131105000000001"  # 目黒区福祉事務所 of twistd.conf (emulated code)
CARE_INSURANCE = "care-insurance"
LOCAL_TAX = "local-tax"
CARE_AFFAIR = "JM90000000001000"  # 介護保険 affairs: every query of the mix
TAX_AFFAIR = "JM90000000002000"
TAX_INFORMATION = "TM00000000000002"  # 地方税関係情報
CARE_INFORMATION = "TM00000000000004"  # 介護保険 (保険給付の支給・保険料の徴収)
ASSISTANCE_INFORMATION = "TM00000000900001"  # 生活保護関係情報 (emulated)
PENSION_INFORMATION = "TM00000000900002"  # 年金給付関係情報 (emulated)
FLOW_TIMEOUT = 120.0  # seconds a flow may take before it counts as an error
READY_TIMEOUT = 600.0  # seconds every node has to get a permitted-query list in force

# The periodic jobs of every party in this box ([delivery], [health]), against twistd.conf's
# (measured on 100 idle nodes: an outbox poll costs about 1.5 ms of CPU and a health look
# about 2.5 ms, so at twistd.conf's 1 s and 5 s 1,741 nodes would need about 3.5 cores doing
# nothing). Every flow's messages leave at once (the outbox's send_now); the poll only picks
# up retries and expired leases, which a flow here does not need. At these intervals the whole
# idle box took 0.88-1.4 cores while every outbox polled every poll_interval; since each
# party's outbox (SQLite, one process) polls only when a lease or a retry falls due, and not
# at all while nothing is pending, poll_interval is only the shortest time between two polls
# (docs/performance.md, "The nation in one box").
JOB_INTERVALS = {
    "poll_interval": 10.0,  # twistd.conf: 1 s
    "health_interval": 60.0,  # twistd.conf: 5 s
    "list_refresh": 3600.0,  # twistd.conf: 300 s (the list is fetched at start)
    "retention_interval": 600.0,  # twistd.conf: 60 s (held provisions' expiry)
    "notice_status_interval": 600.0,  # twistd.conf: 60 s
}


@dataclass(frozen=True)
class Category:
    """One kind of query of the mix: a procedure, an information name, whom it is asked of
    (``previous``: the municipality the person lived in before; ``pension``, ``welfare``)
    and its share of the flows."""

    name: str
    procedure: str
    information_name: str
    provider: str
    share: float


# The mix. SOURCES.md (会計検査院, May 2024): 30.29 million queries by local governments in
# FY2022, the largest category 地方税関係情報; the report's shares of the other categories are
# not in the repository, so the shares below are EMULATED, local tax the largest. Every query
# is a municipality's care-insurance office asking under a row of the permitted-query list
# (simulators/network/data/permitted_list.csv).
MIX = (
    Category("地方税関係情報 (local tax)", "JT90010000000001", TAX_INFORMATION, "previous", 0.70),
    Category("介護保険 (care insurance)", "JT90010000000002", CARE_INFORMATION, "previous", 0.15),
    Category(
        "年金給付関係情報 (pensions)", "JT90010000000001", PENSION_INFORMATION, "pension", 0.10
    ),
    Category(
        "生活保護関係情報 (public assistance)",
        "JT90010000000001",
        ASSISTANCE_INFORMATION,
        "welfare",
        0.05,
    ),
)
ASSISTED_EVERY = 4  # one person in four of a slice receives public assistance


@dataclass(frozen=True)
class Settings:
    """What a run does (the command line)."""

    municipalities: int = MUNICIPALITIES
    persons: int = 4
    seconds: float = 60.0
    warmup: float = 10.0
    idle: float = 20.0
    concurrency: int = 64
    start_concurrency: int = 8
    seed: int = 20221
    pki: Path | None = None


QUICK = {"municipalities": 50, "seconds": 10.0, "warmup": 3.0, "idle": 5.0}


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="bench/national.py",
        description="The hub, every municipality and the pension and welfare institutions in "
        "one process on the in-memory network: RSS, start time, flows/s of a traffic mix.",
    )
    defaults = Settings()

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text} is not 1 or more")
        return value

    def seconds(text: str) -> float:
        value = float(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value

    for name, kind, text in (
        ("municipalities", positive, f"municipalities in the box, 2 to {MUNICIPALITIES}"),
        ("persons", positive, "persons per municipality"),
        ("seconds", seconds, "measured window (s)"),
        ("warmup", seconds, "traffic before the window (s)"),
        ("idle", seconds, "the box measured idle before the traffic (s)"),
        ("concurrency", positive, "flows in flight, a closed loop"),
        ("start_concurrency", positive, "nodes starting at once"),
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{text} (default {getattr(defaults, name):g})",
        )
    parser.add_argument("--seed", type=int, default=None, help="seed of the traffic")
    parser.add_argument(
        "--pki",
        type=Path,
        default=None,
        help="where the PKI is kept and reused (made if missing; default: in the temporary "
        "directory, made afresh: about 3 minutes for 1,741 municipalities)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK['municipalities']} municipalities, "
        f"{QUICK['seconds']:g} s window",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    arguments = parser.parse_args(argv)
    chosen = QUICK if arguments.quick else {}
    given = {
        name: value
        for name in (
            "municipalities",
            "persons",
            "seconds",
            "warmup",
            "idle",
            "concurrency",
            "start_concurrency",
            "seed",
            "pki",
        )
        if (value := getattr(arguments, name)) is not None
    }
    settings = Settings(**{**asdict(defaults), **chosen, **given})
    if not 2 <= settings.municipalities <= MUNICIPALITIES:
        parser.error(f"--municipalities must be 2 to {MUNICIPALITIES}")
    return settings, arguments


# -- the institutions ------------------------------------------------------------------------


def municipality_codes() -> list[str]:
    """The 1,741 municipality codes of the box, sorted: SYNTHETIC. The repository has no list
    of the real codes and SOURCES.md no count per prefecture, so the 1,718 市町村 are spread
    evenly over the 47 prefectures (the first 26 get 37, the others 36), numbered 201, 202,
    ... after the prefecture's two digits; the 23 special wards are 13101-13123 (Meguro's
    13110, Setagaya's 13112 and Shibuya's 13113 as in twistd.conf). Every code has its check
    digit."""
    from codes.municipality_code import make_municipality_code

    others = MUNICIPALITIES - SPECIAL_WARDS
    each, more = divmod(others, PREFECTURES)
    codes = [
        make_municipality_code(f"{prefecture:02d}{201 + serial:03d}")
        for prefecture in range(1, PREFECTURES + 1)
        for serial in range(each + (prefecture <= more))
    ]
    codes += [make_municipality_code(f"13{101 + ward:03d}") for ward in range(SPECIAL_WARDS)]
    return sorted(codes)


def chosen_municipalities(count: int) -> list[str]:
    """``count`` of the codes, spread evenly over the list (all of them for 1,741)."""
    codes = municipality_codes()
    return [codes[index * len(codes) // count] for index in range(count)]


def institution_codes(municipalities: Sequence[str]) -> list[str]:
    """The institution codes of the box's nodes: the municipalities', the pension
    institution's and the welfare office's."""
    from codes.institution import institution_code_for_municipality

    return [institution_code_for_municipality(code) for code in municipalities] + [
        PENSION,
        WELFARE,
    ]


def make_pki(directory: Path, institutions: Sequence[str]) -> float:
    """The PKI of the box (each institution's TLS, signing and encryption keys: the nodes
    sign, encrypt for the requester and decrypt with their own), made where missing; the
    seconds it took. No back-office certificate: the back offices are the Python API."""
    from crypto.pki import InstitutionEntry, init_pki

    began = time.monotonic()
    init_pki(directory, [InstitutionEntry(code) for code in institutions])
    return time.monotonic() - began


def node_name(code: str) -> str:
    """The section name of an institution of the box (``m131105``, ``pension``,
    ``welfare``)."""
    if code == PENSION:
        return "pension"
    if code == WELFARE:
        return "welfare"
    return "m" + code[1:7]


def write_config(directory: Path, pki: Path, municipalities: Sequence[str]) -> Path:
    """The box's configuration file: the hub, one ``[institution:…]`` per node (the listen
    and address keys are required but unused: nothing listens) and the job intervals."""
    from codes.institution import institution_code_for_municipality

    unused = "tcp:port=0:interface=127.0.0.1"
    nowhere = "https://127.0.0.1:1"
    sections = [
        f"""[renkei]
pki = {pki}
hub_address = {nowhere}

[network]
database = sqlite:///{directory / "hub.sqlite"}
listen = {unused}
address = {nowhere}
permitted_list = {REPOSITORY / "simulators/network/data/permitted_list.csv"}
list_validity = 86400
permit_validity = 600

[delivery]
retry_initial = 0.5
retry_maximum = 10
lease = 30
poll_interval = {JOB_INTERVALS["poll_interval"]}
list_refresh = {JOB_INTERVALS["list_refresh"]}
retention_interval = {JOB_INTERVALS["retention_interval"]}
notice_status_interval = {JOB_INTERVALS["notice_status_interval"]}

[health]
interval = {JOB_INTERVALS["health_interval"]}
"""
    ]

    def node(code: str, display: str, kind: str, provides: str, systems: dict[str, str]) -> str:
        name = node_name(code)
        text = f"""
[institution:{name}]
code = {code}
name = {display}
kind = {kind}
database = sqlite:///{directory / "nodes" / (name + ".sqlite")}
network_listen = {unused}
network_address = {nowhere}
back_office_listen = {unused}
back_office_address = {nowhere}
back_office_systems = {" ".join(systems)}
provides = {provides}
"""
        for system, keys in systems.items():
            text += f"\n[back-office:{name}:{system}]\n{keys}\n"
        return text

    for municipality in municipalities:
        sections.append(
            node(
                institution_code_for_municipality(municipality),
                f"市区町村{municipality}",
                "municipality",
                f"{TAX_INFORMATION} {CARE_INFORMATION}",
                {
                    CARE_INSURANCE: f"affairs = {CARE_AFFAIR}\n"
                    f"information_names = {CARE_INFORMATION}",
                    LOCAL_TAX: f"affairs = {TAX_AFFAIR}\ninformation_names = {TAX_INFORMATION}",
                },
            )
        )
    sections.append(
        node(
            PENSION,
            "年金事務機関",
            "pension",
            PENSION_INFORMATION,
            {"pension": f"information_names = {PENSION_INFORMATION}"},
        )
    )
    sections.append(
        node(
            WELFARE,
            "目黒区福祉事務所",
            "welfare_office",
            ASSISTANCE_INFORMATION,
            {"public-assistance": f"information_names = {ASSISTANCE_INFORMATION}"},
        )
    )
    path = directory / "national.conf"
    path.write_text("\n".join(sections), encoding="utf-8")
    return path


# -- the persons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Resident:
    """Person ``index`` of municipality ``home`` (an index into the box's municipalities):
    registered at home (where the queries start), at the municipality it moved from (the
    next one of the box, which keeps its local-tax and care-insurance 副本), at the pension
    institution and, one in `ASSISTED_EVERY`, at the welfare office."""

    home: int
    index: int
    individual_number: str

    @property
    def assisted(self) -> bool:
        return self.index % ASSISTED_EVERY == 0

    def number_at(self, where: str) -> str:
        """Its integrated address number at home, at its previous municipality, at the
        pension institution or at the welfare office (15 digits; numbers of one node never
        collide)."""
        prefix = {"home": "1", "previous": "2", "pension": "3", "welfare": "4"}[where]
        return f"{prefix}{self.home:06d}{self.index:08d}"


def residents(municipalities: int, persons: int) -> list[Resident]:
    """Every person of the box, with valid individual numbers (synthetic)."""
    from codes.individual_number import make_individual_number

    return [
        Resident(
            home,
            index,
            make_individual_number(f"{60_000_000_000 + home * 10_000 + index:011d}"),
        )
        for home in range(municipalities)
        for index in range(persons)
    ]


def replica_records(resident: Resident, where: str, municipality: str) -> list[Any]:
    """The 副本 an institution keeps about a resident: at the previous municipality its
    local-tax and care-insurance records, at the pension institution its pension, at the
    welfare office its public assistance (values synthetic, valid against the catalogue)."""
    from middleware.replica import ReplicaRecord

    number = resident.number_at(where)
    key = f"{resident.home:06d}-{resident.index:06d}"
    if where == "previous":
        return [
            ReplicaRecord(
                record_id=f"TAX-{key}",
                integrated_address_number=number,
                information_name=TAX_INFORMATION,
                data_set="0101",
                items={
                    "TK00000201010001": "2026",
                    "TK00000201010002": "1",
                    "TK00000201010003": "3500",
                    "TK00000201010004": str(50_000 + resident.index),
                    "TK00000201010007": "1420000",
                    "TK00000201010008": "1980000",
                    "TK00000201010009": "0",
                },
            ),
            ReplicaRecord(
                record_id=f"KAIGO-{key}",
                integrated_address_number=number,
                information_name=CARE_INFORMATION,
                data_set="0101",
                items={
                    "TK00000401010001": f"{resident.home:04d}{resident.index:06d}",
                    "TK00000401010002": municipality,
                    "TK00000401010003": "2021-04-01",
                    "TK00000401010005": "01",
                    "TK00000401010006": "1",
                },
            ),
        ]
    if where == "pension":
        return [
            ReplicaRecord(
                record_id=f"NENKIN-{key}",
                integrated_address_number=number,
                information_name=PENSION_INFORMATION,
                data_set="0101",
                items={
                    "TK90000201010001": "01",
                    "TK90000201010002": "2020-04-01",
                    "TK90000201010003": "780000",
                    "TK90000201010004": "1",
                },
            )
        ]
    return [
        ReplicaRecord(
            record_id=f"HOGO-{key}",
            integrated_address_number=number,
            information_name=ASSISTANCE_INFORMATION,
            data_set="0101",
            items={
                "TK90000101010001": "1",
                "TK90000101010002": "2022-04-01",
                "TK90000101010004": "0",
            },
        )
    ]


# -- the box ---------------------------------------------------------------------------------


def memory() -> dict[str, float]:
    """This process's resident set now and at its peak (MB), and its threads."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "peak_rss_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1),
        "threads": int(status["Threads"]),
    }


def cpu_seconds() -> float:
    """CPU seconds (user + system, every thread) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Flows:
    """What the traffic did: each flow's end, latency and category."""

    window: tuple[float, float] = (0.0, 0.0)
    latencies: list[float] = field(default_factory=list)
    in_window: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    started: int = 0

    def failed(self, problem: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(problem)


async def run(settings: Settings, directory: Path, report: dict[str, Any]) -> None:
    """Build the box, start it, load the persons, run the traffic, stop it; the figures go
    into ``report`` as they come."""
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredSemaphore, gatherResults
    from twisted.internet.task import deferLater

    from codes.catalogue import default_catalogue
    from middleware.config import load_config
    from middleware.deferred import deferred
    from middleware.network import HUB
    from middleware.node import IntermediateServer
    from middleware.storage import stop_all
    from simulators.in_memory import InMemoryNetwork
    from simulators.network import jukinet
    from simulators.network.hub import Hub

    municipalities = chosen_municipalities(settings.municipalities)
    institutions = institution_codes(municipalities)
    pki = settings.pki or directory / "pki"
    say(f"PKI of {len(institutions)} institutions in {pki} ...")
    report["pki_seconds"] = round(make_pki(pki, institutions), 1)
    config = load_config(write_config(directory, pki, municipalities))
    report["memory_before_start"] = memory()

    say(f"building the hub and {len(institutions)} nodes ...")
    began = time.monotonic()
    cpu_began = cpu_seconds()
    network = InMemoryNetwork(reactor)
    hub = Hub(config, reactor, network.transport(HUB))
    network.connect(HUB, hub)
    catalogue = default_catalogue()
    nodes: dict[str, IntermediateServer] = {}
    for institution in config.institutions:
        node = IntermediateServer(
            config, institution, catalogue, reactor, network.transport(institution.code)
        )
        network.connect(institution.code, node)
        nodes[institution.code] = node
    built = time.monotonic()
    started: list[IntermediateServer] = []
    try:
        say("starting them ...")
        await hub.startService()
        limit = DeferredSemaphore(settings.start_concurrency)

        @deferred
        async def start(node: IntermediateServer) -> None:
            await node.startService()
            started.append(node)
            if len(started) % 250 == 0:
                say(f"    {len(started)} nodes started, {time.monotonic() - began:.0f} s")

        await gatherResults([limit.run(start, node) for node in nodes.values()], consumeErrors=True)
        waited = 0.0
        while not all(node.lists.current is not None for node in nodes.values()):
            if waited > READY_TIMEOUT:
                raise RuntimeError("a node has no permitted-query list in force")
            await deferLater(reactor, 0.5, lambda: None)
            waited += 0.5
        ready = time.monotonic()
        report["start"] = {
            "parties": len(nodes) + 1,
            "build_seconds": round(built - began, 1),
            "start_seconds": round(ready - built, 1),
            "ready_seconds": round(ready - began, 1),
            "cpu_seconds": round(cpu_seconds() - cpu_began, 1),
            "memory": memory(),
        }
        say(f"    all {len(nodes) + 1} parties ready after {ready - began:.1f} s")

        people = residents(len(municipalities), settings.persons)
        say(f"registering {len(people)} persons and their 副本 ...")
        loaded = time.monotonic()
        await hub.database.run(
            jukinet.register_residents, [person.individual_number for person in people]
        )
        codes = institution_codes(municipalities)
        registrations = DeferredSemaphore(settings.concurrency)

        @deferred
        async def register(person: Resident) -> None:
            previous = (person.home + 1) % len(municipalities)
            places = [(codes[person.home], "home"), (codes[previous], "previous")]
            places.append((PENSION, "pension"))
            if person.assisted:
                places.append((WELFARE, "welfare"))
            for code, where in places:
                node = nodes[code]
                state = await node.register_person(
                    person.individual_number, person.number_at(where), wait=FLOW_TIMEOUT
                )
                if state["fugo_state"] != "acquired":
                    raise RuntimeError(f"{node.institution.name}: 符号 {state['fugo_state']}")
                if where == "home":
                    continue
                for record in replica_records(person, where, municipalities[previous]):
                    system = {
                        TAX_INFORMATION: LOCAL_TAX,
                        CARE_INFORMATION: CARE_INSURANCE,
                        PENSION_INFORMATION: "pension",
                        ASSISTANCE_INFORMATION: "public-assistance",
                    }[record.information_name]
                    await node.register_replica_record(record, system)

        await gatherResults(
            [registrations.run(register, person) for person in people], consumeErrors=True
        )
        report["population"] = {
            "persons": len(people),
            "per_municipality": settings.persons,
            "seconds": round(time.monotonic() - loaded, 1),
            "memory": memory(),
        }
        say(f"    done in {time.monotonic() - loaded:.1f} s")

        gc.collect()
        gc.freeze()  # what is built stays: full collections then skip it (bench/flows' box)
        report["memory_idle"] = memory()
        say(f"idle for {settings.idle:g} s (the parties' periodic jobs only) ...")
        idle_from = cpu_seconds()
        await deferLater(reactor, settings.idle, lambda: None)
        report["idle_cores"] = round((cpu_seconds() - idle_from) / settings.idle, 3)
        report["flows"] = await traffic(settings, nodes, codes, people, reactor)
        report["memory_after_traffic"] = memory()
    finally:
        say("stopping ...")
        await gatherResults(
            [node.stopService() for node in started], consumeErrors=True
        ).addErrback(lambda _: None)
        if hub.running:
            await hub.stopService()
        stop_all()


async def traffic(
    settings: Settings,
    nodes: dict[str, Any],
    codes: Sequence[str],
    people: Sequence[Resident],
    reactor: Any,
) -> dict[str, Any]:
    """A closed loop of ``concurrency`` flows: each picks a category of `MIX` by its share,
    a person of a random municipality and asks, as that municipality's care-insurance
    office, the category's provider; it must end ``provided`` with a result."""
    from twisted.internet.defer import gatherResults

    from middleware.queries import QuerySubmission

    chance = random.Random(settings.seed)
    municipalities = len(codes) - 2
    flows = Flows()
    warm_until = time.monotonic() + settings.warmup
    end = warm_until + settings.seconds
    flows.window = (warm_until, end)
    say(
        f"traffic: {settings.concurrency} flows in flight, {settings.warmup:g} s warm-up, "
        f"{settings.seconds:g} s measured ..."
    )
    by_home: dict[int, list[Resident]] = {}
    for person in people:
        by_home.setdefault(person.home, []).append(person)

    async def one_flow() -> None:
        category = chance.choices(MIX, weights=[c.share for c in MIX])[0]
        home = chance.randrange(municipalities)
        candidates = [p for p in by_home[home] if category.provider != "welfare" or p.assisted]
        person = chance.choice(candidates)
        provider = {
            "previous": codes[(home + 1) % municipalities],
            "pension": PENSION,
            "welfare": WELFARE,
        }[category.provider]
        requester = nodes[codes[home]].requester
        began = time.monotonic()
        flows.started += 1
        try:
            query_id = await requester.submit_query(
                QuerySubmission(
                    integrated_address_number=person.number_at("home"),
                    procedure=category.procedure,
                    information_name=category.information_name,
                    provider=provider,
                ),
                CARE_INSURANCE,
            )
            status = await requester.wait_for_end(query_id, FLOW_TIMEOUT, CARE_INSURANCE)
        except Exception as failure:
            flows.failed(f"{category.name}: {failure!r}")
            return
        ended = time.monotonic()
        flows.states[status.state] += 1
        if status.state != "provided" or not status.result:
            flows.failed(f"{category.name}: ended {status.state} ({status.error_code})")
            return
        if warm_until <= ended < end:
            flows.latencies.append(ended - began)
            flows.in_window[category.name] += 1

    async def loop() -> None:
        while time.monotonic() < end:
            await one_flow()

    from middleware.deferred import deferred

    window = CpuWindow({"box": os.getpid()})
    cpu_at = 0.0

    def begin_window() -> None:
        nonlocal cpu_at
        window.begin()
        cpu_at = cpu_seconds()

    reactor.callLater(settings.warmup, begin_window)
    loops = [deferred(loop)() for _ in range(settings.concurrency)]
    load_at_start = os.getloadavg()
    await gatherResults(loops, consumeErrors=True)
    window.end()
    counted = len(flows.latencies)
    return {
        "flows_per_second": round(counted / settings.seconds, 1),
        "flows_in_window": counted,
        "by_category": dict(flows.in_window),
        "p50_ms": milliseconds(percentile(flows.latencies, 0.5)),
        "p99_ms": milliseconds(percentile(flows.latencies, 0.99)),
        "max_ms": milliseconds(max(flows.latencies, default=None)),
        "flows_started": flows.started,
        "final_states": dict(flows.states),
        "errors": flows.errors,
        "error_samples": flows.error_samples,
        "process_cores": window.cores["box"],
        "cpu_ms_per_flow": round((cpu_seconds() - cpu_at) / counted * 1000, 2) if counted else None,
        "machine_busy": window.machine_busy,
        "load_average_before": [round(v, 2) for v in load_at_start],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


# -- the report ------------------------------------------------------------------------------


def show(label: str, value: Any, unit: str = "") -> None:
    print(f"  {label:<44} {value}{unit}")


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print("\nmachine")
    show("date", m["date"])
    show("nproc / CPU model", f"{m['nproc']} / {m['cpu_model']}")
    show("kernel", m["kernel"])
    show("Python / Twisted", f"{m['python']} / {m['twisted']}")
    show("OpenSSL / cryptography", f"{m['openssl']} / {m['cryptography']}")
    show("load average at start (1, 5, 15 min)", m["load_average_at_start"])
    s = report["settings"]
    print("\nsettings")
    show("municipalities (+ pension, welfare, hub)", s["municipalities"])
    show("persons per municipality", s["persons"])
    show(
        "flows in flight / warm-up / window",
        f"{s['concurrency']} / {s['warmup']:g} s / {s['seconds']:g} s",
    )
    show("job intervals (s)", ", ".join(f"{k} {v:g}" for k, v in JOB_INTERVALS.items()))
    show("PKI", f"{report.get('pki_seconds')} s (0: reused)")
    start = report.get("start")
    if start:
        print("\nstart")
        show("parties", start["parties"])
        show(
            "built (keys loaded) / started (lists in force)",
            f"{start['build_seconds']} s / {start['start_seconds']} s",
        )
        show("all parties ready after", start["ready_seconds"], " s")
        show("CPU used to get there", start["cpu_seconds"], " s")
        show(
            "RSS / threads when ready",
            f"{start['memory']['rss_mb']} MB / {start['memory']['threads']}",
        )
    population = report.get("population")
    if population:
        show(
            "persons registered (+ 副本) in",
            f"{population['persons']} in {population['seconds']} s",
        )
    flows = report.get("flows")
    if flows:
        print("\nflows (closed loop)")
        show("flows/s in the window", flows["flows_per_second"])
        show("by category", flows["by_category"])
        show(
            "p50 / p99 / max latency",
            f"{flows['p50_ms']} / {flows['p99_ms']} / {flows['max_ms']}",
            " ms",
        )
        show(
            "CPU: process / machine busy",
            f"{flows['process_cores']} cores / {flows['machine_busy'] * 100:.0f}%",
        )
        show("CPU per flow", flows["cpu_ms_per_flow"], " ms")
        show(
            "load average before / after",
            f"{flows['load_average_before']} / {flows['load_average_after']}",
        )
        show("final states", flows["final_states"])
        show("errors", flows["errors"])
        for sample in flows["error_samples"]:
            print(f"    error: {sample}")
    if "idle_cores" in report:
        idle = report["settings"]["idle"]
        show(f"CPU of the idle box ({idle:g} s, jobs only)", report["idle_cores"], " cores")
    print("\nmemory")
    for key in ("memory_before_start", "memory_idle", "memory_after_traffic"):
        if key in report:
            value = report[key]
            show(
                key.removeprefix("memory_").replace("_", " "),
                f"RSS {value['rss_mb']} MB (peak {value['peak_rss_mb']} MB), "
                f"{value['threads']} threads",
            )


def main(argv: Sequence[str] | None = None) -> int:
    settings, arguments = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Every SQLite database holds a few files open (its writer and readers, WAL).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    began = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="renkei-national-"))
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {**asdict(settings), "pki": str(settings.pki) if settings.pki else None},
        "job_intervals": JOB_INTERVALS,
        "mix": [asdict(category) for category in MIX],
    }
    say(f"bench/national.py: temporary directory {directory}")
    failure: list[BaseException] = []

    async def body(_: Any) -> None:
        try:
            await run(settings, directory, report)
        except Exception as problem:
            failure.append(problem)
            raise

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(body(reactor)))
    except SystemExit:
        pass
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if arguments.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    report["elapsed_seconds"] = round(time.monotonic() - began, 1)
    print_report(report)
    print(f"\nelapsed {report['elapsed_seconds']} s")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {arguments.json}")
    if failure:
        print(f"failed: {failure[0]!r}", file=sys.stderr)
        return 1
    return 1 if report.get("flows", {}).get("errors", 1) else 0


if __name__ == "__main__":
    sys.exit(main())
