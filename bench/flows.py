"""End-to-end query flows per second against a bare mutual-TLS echo baseline, in one run.

``make bench`` runs ``.venv/bin/python bench/flows.py``; ``--quick`` is a ~20 s smoke run.
What each figure means and the figures of a real run are in docs/performance.md.

First the crypto floor, in this process: the CPU seconds of the cryptography one flow needs
(the hub signs the permit, the provider verifies it, signs its payload and encrypts it, the
requester decrypts and verifies it, with the project's ``crypto`` functions and the run's
PKI), giving the flows/s the cores could reach if a flow cost only that. Then three passes,
every process on 127.0.0.1 and every loop bounded in time:

1. baseline: a Klein echo server (its own process) listening with ``crypto.tls.server_options``
   and ``listen_mutual_tls``; client processes POST a 2 KB body over kept-alive mutual-TLS
   connections (``make_http_client`` with ``ClientTLSPolicy``) and check the echo.
2. flows (closed loop): a network in a box in one process (``twistd -n renkei -c CONFIG
   --single-process``: hub + Meguro + Setagaya, SQLite, a generated demo population) and client
   processes, each running ``--clients`` Meguro care-insurance back offices
   (``BackOfficeClient``) that submit a query for Setagaya's local-tax information about a
   random person and poll it until it ended.
3. half rate (open loop): the same flows paced at half the rate measured in pass 2; the
   latency of each flow counts from the moment it was due to be submitted.

Through every window the resident memory of the box (its process tree) is sampled every
5 s; whether it stays flat is judged on the second half of the half-rate window
(``--half-rate-duration 600`` gives the issue's 10 minutes).

Every process started is stopped at the end, also on Ctrl-C or an error. The exit status is 1
when any flow or echo failed (a correctness check); performance targets are only reported.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from middleware.messages import Permit, ProvisionPayload

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
CARE_INSURANCE = "care-insurance"
LOCAL_TAX = "local-tax"
PROCEDURE = "JT90010000000001"  # 保険料の賦課 (care insurance)
INFORMATION_NAME = "TM00000000000002"  # 地方税関係情報
CARE_INFORMATION = "TM00000000000004"
FINISHED = ("provided", "no_data", "refused", "error")
# HTTPS requests one flow makes, polls aside: the back-office submit, then node → hub
# (query), hub → Setagaya (provision request), Setagaya → hub and hub → Meguro (provision).
HOPS_PER_FLOW = 5
BOX_READY_LINE = "renkei ready"  # in one process after the demo population, else once all are

# Issue 12 (Throughput): flows/s, flows/s ÷ echo requests/s, flows/s ÷ the crypto floor.
TARGET_FLOWS_PER_SECOND = 500.0
TARGET_BASELINE_RATIO = 0.15
TARGET_CRYPTO_FLOOR_RATIO = 0.5
TARGET_P99_HALF_RATE = 0.050

# Seconds a client keeps going after its window to let flows in flight end.
GRACE = 10.0
FLOW_TIMEOUT = 30.0
# Flows slower than this are listed with the second of the window they began in.
SLOW = 0.050


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Every knob of one run (defaults, or --quick, overridden by explicit options)."""

    warmup: float
    duration: float
    baseline_duration: float
    half_rate_duration: float
    baseline_processes: int
    baseline_concurrency: int
    body_bytes: int
    processes: int
    clients: int
    persons: int
    poll_interval: float
    seed: int
    crypto_rounds: int


DEFAULTS = Settings(
    warmup=5.0,
    duration=20.0,
    baseline_duration=15.0,
    half_rate_duration=20.0,
    baseline_processes=4,
    baseline_concurrency=8,
    body_bytes=2048,
    processes=2,
    clients=4,
    persons=200,
    poll_interval=0.0,
    seed=2026,
    crypto_rounds=200,
)
QUICK = Settings(
    warmup=1.5,
    duration=4.0,
    baseline_duration=3.0,
    half_rate_duration=4.0,
    baseline_processes=4,
    baseline_concurrency=8,
    body_bytes=2048,
    processes=2,
    clients=4,
    persons=40,
    poll_interval=0.0,
    seed=2026,
    crypto_rounds=50,
)


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="bench/flows.py",
        description=(
            "Measure, in one run on this machine: the requests/s of a bare mutual-TLS keep-alive "
            "echo (Klein on Twisted, the project's TLS settings), then end-to-end query flows/s "
            "of a network in a box (twistd renkei: hub, Meguro, Setagaya, SQLite) driven by "
            "Meguro care-insurance back-office clients that submit and poll, with p50/p99 "
            "latency, and the p99 latency at half that rate (open loop), sampling the box's "
            "resident memory through each window (flat or growing at half rate: "
            "--half-rate-duration 600 for 10 minutes). Prints the machine and "
            "every figure; ratios are against the baseline of the same run. Exits 1 when any "
            "flow or echo failed. A default run takes about 2 minutes."
        ),
        epilog="Every server and client is a separate process on 127.0.0.1, stopped at the end.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "smoke run of about 20 s: warm-up 1.5 s, baseline 3 s, flows 4 s, half rate 4 s, "
            "40 persons (explicit options below still win)"
        ),
    )

    def seconds(text: str) -> float:
        value = float(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value

    def positive(text: str) -> int:
        value = int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value

    def option(name: str, kind: Callable[[str], Any], meta: str, text: str) -> None:
        attribute = name.removeprefix("--").replace("-", "_")
        parser.add_argument(
            name,
            type=kind,
            default=None,
            metavar=meta,
            help=(
                f"{text} (default {getattr(DEFAULTS, attribute)}, "
                f"--quick {getattr(QUICK, attribute)})"
            ),
        )

    option("--warmup", seconds, "S", "seconds of load before each pass's measurement window starts")
    option("--duration", seconds, "S", "seconds of the closed-loop flows measurement window")
    option("--baseline-duration", seconds, "S", "seconds of the echo baseline measurement window")
    option(
        "--half-rate-duration",
        seconds,
        "S",
        "seconds of the open-loop half-rate measurement window",
    )
    option("--baseline-processes", positive, "N", "echo client processes")
    option(
        "--baseline-concurrency",
        positive,
        "N",
        "concurrent echo requests per echo client process (one kept-alive connection each)",
    )
    option("--body-bytes", positive, "B", "size of the echoed POST body in bytes")
    option("--processes", positive, "K", "flow client processes (closed loop and half rate)")
    option(
        "--clients",
        positive,
        "C",
        "concurrent back-office clients per flow client process (closed loop), each with its "
        "own connection pool; the half-rate pass spreads its flows over as many",
    )
    option(
        "--persons",
        positive,
        "P",
        "persons in the generated demo population, registered in Meguro and Setagaya with one "
        "Setagaya local-tax record each (registered at box start, before any pass)",
    )
    option(
        "--poll-interval",
        seconds,
        "S",
        "seconds between GET /queries/<id> polls of one flow (polls are load on the box too); "
        "0, the default, long-polls with ?wait= so each flow makes one status request",
    )
    option("--seed", int, "N", "seed for choosing persons")
    option(
        "--crypto-rounds",
        positive,
        "N",
        "timed rounds of one flow's cryptography (the crypto floor, measured in the benchmark "
        "process before the baseline)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the machine and figures as JSON"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (PKI, configuration, databases, logs) and print it",
    )
    parser.add_argument(
        "--link-batch-size",
        type=positive,
        metavar="N",
        help="[delivery] link_batch_size of the box: messages to one destination sent in one "
        "request at most (1: each alone; default: that of twistd.conf)",
    )
    parser.add_argument(
        "--link-batch-linger",
        type=float,
        metavar="S",
        help="[delivery] link_batch_linger of the box: seconds a batch waits after its first "
        "message (0: the reactor's next turn; default: that of twistd.conf)",
    )
    parser.add_argument(
        "--link-batch-in-flight",
        type=int,
        metavar="N",
        help="[delivery] link_batch_in_flight of the box: unanswered requests to one "
        "destination after which a lingering batch waits for one to end (0: none; default: "
        "that of twistd.conf)",
    )
    parser.add_argument(
        "--parties-as-processes",
        action="store_true",
        help="run the box as make run does, every party in a process of its own (default: all "
        "in one process); the box's CPU is then its processes' together",
    )
    arguments = parser.parse_args(argv)
    base = QUICK if arguments.quick else DEFAULTS
    overrides = {
        name: getattr(arguments, name)
        for name in Settings.__dataclass_fields__
        if getattr(arguments, name, None) is not None
    }
    return Settings(**{**base.__dict__, **overrides}), arguments


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    from importlib.metadata import version

    from OpenSSL import SSL

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    openssl_version: Callable[[int], bytes] = getattr(SSL, "OpenSSL_version")  # noqa: B009
    return {
        "date": datetime.date.today().isoformat(),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": version("twisted"),
        "klein": version("klein"),
        "treq": version("treq"),
        "pyopenssl": version("pyopenssl"),
        "openssl": openssl_version(getattr(SSL, "OPENSSL_VERSION")).decode(),  # noqa: B009
        "cryptography": version("cryptography"),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


# -- CPU accounting ---------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MEMORY_SAMPLE = 5.0  # seconds between two samples of the box's resident memory in a window
# Memory counts as flat when, over the second half of a window, it grows at less than this
# fraction of itself per 10 minutes (least-squares slope of the samples).
FLAT_GROWTH_PER_10_MINUTES = 0.01


def _all_stats() -> dict[int, list[str]]:
    """The /proc/<pid>/stat fields (after the command name) of every living process."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
    return stats


def _tree_of(pid: int, stats: dict[int, list[str]]) -> list[int]:
    """``pid`` (if living) and its living descendants."""
    tree, found = [pid], []
    while tree:
        current = tree.pop()
        if current in stats:
            found.append(current)
        tree += [child for child, fields in stats.items() if int(fields[1]) == current]
    return found


def _descendants(pid: int) -> list[int]:
    return [found for found in _tree_of(pid, _all_stats()) if found != pid]


def _tree_stats(pid: int) -> list[list[str]]:
    """The /proc/<pid>/stat fields (after the command name) of a process and its living
    descendants (the parties' processes under the supervisor); none if it is gone."""
    stats = _all_stats()
    return [stats[found] for found in _tree_of(pid, stats)]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process and its living descendants have
    used so far; 0 if gone."""
    return sum((int(f[11]) + int(f[12])) / CLOCK_TICKS for f in _tree_stats(pid))


PARTY = "party:"  # the key of a party's process in a CpuWindow: "party:meguro"


def with_parties(pids: dict[str, int]) -> dict[str, int]:
    """``pids`` and, for each of them running the parties as processes, each party's process
    as ``PARTY + name`` (a process whose command line has ``--party NAME``), so that a window
    also tells which party took the box's CPU."""
    parties: dict[str, int] = {}
    for pid in pids.values():
        for child in _descendants(pid):
            try:
                arguments = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--party" in arguments[:-1]:
                name = arguments[arguments.index(b"--party") + 1].decode()
                parties[PARTY + name] = child
    return {**pids, **parties}


def party_cores(window: CpuWindow) -> dict[str, float]:
    """Cores each party's process used in ``window`` (none when the box is one process)."""
    return {
        name.removeprefix(PARTY): cores
        for name, cores in window.cores.items()
        if name.startswith(PARTY)
    }


def process_rss(pid: int) -> int:
    """Resident memory, in bytes, of a process and its living descendants; 0 if gone."""
    return sum(int(f[21]) * PAGE_BYTES for f in _tree_stats(pid))


def memory_figures(samples: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """The box's resident memory over a window, from ``(seconds into it, bytes)`` samples:
    first, last and largest, and the trend of its second half (least-squares slope), which
    says whether memory is flat (`FLAT_GROWTH_PER_10_MINUTES`)."""
    if len(samples) < 4:
        return {}
    mib = 1024 * 1024
    half = [(t, rss / mib) for t, rss in samples[len(samples) // 2 :]]
    mean_t = sum(t for t, _ in half) / len(half)
    mean_m = sum(m for _, m in half) / len(half)
    spread = sum((t - mean_t) ** 2 for t, _ in half)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in half) / spread if spread else 0.0
    return {
        "rss_first_mib": round(samples[0][1] / mib, 1),
        "rss_last_mib": round(samples[-1][1] / mib, 1),
        "rss_max_mib": round(max(rss for _, rss in samples) / mib, 1),
        "second_half_mib_per_minute": round(slope * 60, 3),
        "flat": slope * 600 < FLAT_GROWTH_PER_10_MINUTES * mean_m,
        "samples": [(round(t, 1), round(rss / mib, 1)) for t, rss in samples],
    }


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuWindow:
    """CPU used by some processes and by the machine between two samples."""

    pids: dict[str, int]
    started: float = 0.0
    first: dict[str, float] = field(default_factory=dict)
    machine_first: tuple[float, float] = (0.0, 0.0)
    cores: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    # (seconds into the window, resident bytes) of the server watched (run_clients).
    memory: list[tuple[float, int]] = field(default_factory=list)

    def begin(self) -> None:
        self.started = time.monotonic()
        self.first = {name: process_cpu(pid) for name, pid in self.pids.items()}
        self.machine_first = machine_cpu()

    def end(self) -> None:
        elapsed = time.monotonic() - self.started
        self.cores = {
            name: round((process_cpu(pid) - self.first[name]) / elapsed, 2)
            for name, pid in self.pids.items()
        }
        busy, total = machine_cpu()
        spent = total - self.machine_first[1]
        self.machine_busy = round((busy - self.machine_first[0]) / spent, 3) if spent else 0.0


# -- process supervision ----------------------------------------------------------------------


class Supervisor:
    """Every process this run started; ``stop_all`` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.children: list[multiprocessing.process.BaseProcess] = []
        self.popens: list[subprocess.Popen[bytes]] = []

    def stop_all(self) -> None:
        # Clients first, so that the box is not under load while it shuts down.
        for child in self.children:
            if child.is_alive():
                child.terminate()
        for child in self.children:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join(5)
        for popen in self.popens:
            stop_popen(popen)


def stop_popen(popen: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM (twistd shuts its services down), then SIGKILL after ``timeout``."""
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(10)


def _die_with_parent(signal_number: int = signal.SIGTERM) -> None:
    """In a child: get ``signal_number`` when the benchmark process dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal_number))  # PR_SET_PDEATHSIG


def _kill_with_parent() -> None:
    """For the box: SIGKILL, since twistd may never finish a SIGTERM shutdown under load."""
    _die_with_parent(signal.SIGKILL)


def spawn(
    supervisor: Supervisor, target: Callable[..., None], role: str, params: dict[str, Any]
) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    child = context.Process(
        target=target, args=(params, child_end, os.getpid()), name=f"bench-{role}", daemon=True
    )
    child.start()
    supervisor.children.append(child)
    child_end.close()
    return child, parent_end


def receive(
    connection: Connection, child: multiprocessing.process.BaseProcess, timeout: float
) -> Any:
    """The next message from a child, or RuntimeError if it died or said nothing in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if connection.poll(0.1):
            try:
                message = connection.recv()
            except EOFError:
                raise RuntimeError(f"{child.name} exited (code {child.exitcode})") from None
            if isinstance(message, dict) and "failure" in message:
                raise RuntimeError(f"{child.name} failed:\n{message['failure']}")
            return message
        if not child.is_alive():
            raise RuntimeError(f"{child.name} exited (code {child.exitcode})")
    raise RuntimeError(f"{child.name} said nothing for {timeout:.0f} s")


def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# -- child processes (spawned, each with its own reactor) ---------------------------------------


def _child_setup(parent: int) -> Any:
    """Ignore Ctrl-C (the parent stops children) and install the reactor."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from twisted.internet import reactor as installed
    from twisted.internet.task import LoopingCall

    reactor: Any = installed

    def watch() -> None:
        if os.getppid() != parent and reactor.running:
            reactor.stop()

    watcher = LoopingCall(watch)
    watcher.clock = reactor
    watcher.start(0.5, now=False)
    return reactor


def _report_failure(connection: Connection) -> None:
    import traceback

    with contextlib.suppress(Exception):
        connection.send({"failure": traceback.format_exc()})


def echo_server(params: dict[str, Any], connection: Connection, parent: int) -> None:
    """The baseline server: Klein, mutual TLS as the nodes listen, echoes the POST body."""
    try:
        reactor = _child_setup(parent)
        from klein import Klein
        from twisted.internet.task import LoopingCall
        from twisted.logger import globalLogBeginner, textFileLogObserver

        from adapters.listening import ListeningSite
        from crypto.pki import PkiLayout, load_certificate
        from crypto.tls import listen_mutual_tls, server_options

        # Log like twistd -l does (the box's listeners write no access log, nor does this one).
        log = open(params["log"], "a", encoding="utf-8")  # noqa: SIM115
        observer: Any = textFileLogObserver(log)
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        layout = PkiLayout(Path(params["pki"]))
        options = server_options(
            layout.institution_tls(SETAGAYA).load(), [load_certificate(layout.ca().certificate)]
        )
        app = Klein()

        @app.route("/echo", methods=["POST"])
        def echo(request: Any) -> bytes:
            request.setHeader(b"Content-Type", b"application/octet-stream")
            body: bytes = request.content.read()
            return body

        # The same Site class as the box's listeners.
        site = ListeningSite(app.resource())
        ports: list[Any] = []
        listening = listen_mutual_tls(reactor, "tcp:port=0:interface=127.0.0.1", options, site)
        listening.addCallback(ports.append)
        if not ports:
            raise RuntimeError("the echo server did not listen at once")
        connection.send({"port": ports[0].getHost().port})

        def check_parent() -> None:
            if connection.poll():
                reactor.stop()

        stopper = LoopingCall(check_parent)
        stopper.clock = reactor
        stopper.start(0.2, now=False)
        reactor.callLater(params["lifetime"], reactor.stop)
        reactor.run(installSignalHandlers=False)
    except Exception:
        _report_failure(connection)


def echo_client(params: dict[str, Any], connection: Connection, parent: int) -> None:
    """Baseline load: ``concurrency`` loops POSTing a body over kept-alive mutual TLS."""
    try:
        reactor = _child_setup(parent)
        from twisted.internet.defer import DeferredList
        from twisted.web.http_headers import Headers

        from crypto.pki import PkiLayout, load_certificate, server_name_of_institution
        from crypto.tls import ClientTLSPolicy, make_http_client
        from middleware.deferred import deferred

        layout = PkiLayout(Path(params["pki"]))
        policy = ClientTLSPolicy(
            [load_certificate(layout.ca().certificate)], layout.institution_tls(MEGURO).load()
        )
        policy.expect("127.0.0.1", params["port"], server_name_of_institution(SETAGAYA))
        concurrency = params["concurrency"]
        http = make_http_client(reactor, policy, max_per_host=concurrency)
        url = f"https://127.0.0.1:{params['port']}/echo"
        body = bytes(random.Random(params["index"]).choices(b"0123456789abcdef", k=params["body"]))
        headers = Headers({b"Content-Type": [b"application/octet-stream"]})
        connection.send({"ready": True})
        start, warmup, duration = connection.recv()
        window_start = start + warmup
        window_end = window_start + duration
        result: dict[str, Any] = {"completed": 0, "errors": 0, "latencies": [], "error_samples": []}

        @deferred
        async def loop() -> None:
            while time.monotonic() < window_end:
                began = time.monotonic()
                try:
                    response = await http.post(url, data=body, headers=headers)
                    content = await response.content()
                    ok = response.code == 200 and content == body
                    problem = f"HTTP {response.code}, {len(content)} bytes"
                except Exception as failure:
                    ok, problem = False, repr(failure)
                ended = time.monotonic()
                if not ok:
                    result["errors"] += 1
                    if len(result["error_samples"]) < 5:
                        result["error_samples"].append(problem)
                elif window_start <= ended < window_end:
                    result["completed"] += 1
                    result["latencies"].append(ended - began)

        def begin() -> None:
            loops = DeferredList([loop() for _ in range(concurrency)], consumeErrors=True)
            loops.addCallback(lambda _: http.close())
            loops.addBoth(lambda _: reactor.stop())

        reactor.callLater(max(0.0, start - time.monotonic()), begin)
        reactor.callLater(max(0.0, window_end + GRACE - time.monotonic()), reactor.stop)
        reactor.run(installSignalHandlers=False)
        connection.send(result)
    except Exception:
        _report_failure(connection)


def flow_client(params: dict[str, Any], connection: Connection, parent: int) -> None:
    """Back-office load: closed loop (``rate`` is None) or flows paced at ``rate`` per second."""
    try:
        reactor = _child_setup(parent)
        from twisted.internet.defer import Deferred, DeferredList
        from twisted.internet.task import deferLater

        from middleware.config import load_config
        from middleware.deferred import deferred
        from simulators.back_office import BackOfficeClient

        config = load_config(Path(params["config"]))
        meguro = config.institution("meguro")
        clients = [
            BackOfficeClient(reactor, config, meguro, CARE_INSURANCE)
            for _ in range(params["clients"])
        ]
        persons: list[str] = params["persons"]
        chooser = random.Random(params["seed"])
        interval = params["poll_interval"]
        rate: float | None = params["rate"]
        connection.send({"ready": True})
        start, warmup, duration = connection.recv()
        window_start = start + warmup
        window_end = window_start + duration
        hard_stop = window_end + GRACE
        result: dict[str, Any] = {
            "completed": 0,
            "errors": 0,
            "latencies": [],
            "submit_latencies": [],
            "polls_in_window": 0,
            "polls_per_flow": [],
            "error_samples": [],
            "states": {},
            "unfinished": 0,
            "slow": [],
        }

        def failed(problem: str) -> None:
            result["errors"] += 1
            if len(result["error_samples"]) < 5:
                result["error_samples"].append(problem)

        @deferred
        async def flow(
            client: BackOfficeClient, began: float, counted: Callable[[float], bool]
        ) -> None:
            """One query from submit to observed end; ``began`` is when it was due."""
            polls = 0
            try:
                accepted = await client.submit_query(
                    integrated_address_number=chooser.choice(persons),
                    procedure=PROCEDURE,
                    information_name=INFORMATION_NAME,
                    provider=SETAGAYA,
                )
                submitted = time.monotonic()
                query_id = accepted["query_id"]
                while True:
                    status = await client.query_status(
                        query_id, wait=0 if interval else FLOW_TIMEOUT
                    )
                    polls += 1
                    if window_start <= time.monotonic() < window_end:
                        result["polls_in_window"] += 1
                    state = status["state"]
                    if state in FINISHED:
                        break
                    if time.monotonic() - began > FLOW_TIMEOUT or time.monotonic() > hard_stop:
                        state = f"still {state} after {time.monotonic() - began:.1f} s"
                        break
                    if interval:
                        await deferLater(reactor, interval, lambda: None)
            except Exception as failure:
                failed(repr(failure))
                return
            ended = time.monotonic()
            result["states"][state] = result["states"].get(state, 0) + 1
            records = (status.get("result") or {}).get("records") or []
            if state != "provided" or not records:
                failed(f"query {query_id} ended {state} with {len(records)} records")
            elif counted(ended if rate is None else began):
                result["completed"] += 1
                result["latencies"].append(ended - began)
                if ended - began > SLOW and len(result["slow"]) < 500:
                    result["slow"].append([round(began - window_start, 3), round(ended - began, 4)])
                result["submit_latencies"].append(submitted - began)
                result["polls_per_flow"].append(polls)

        def in_window(moment: float) -> bool:
            return window_start <= moment < window_end

        @deferred
        async def closed_loop(client: BackOfficeClient) -> None:
            while time.monotonic() < window_end:
                await flow(client, time.monotonic(), in_window)

        in_flight: set[Deferred[Any]] = set()

        def forget(result: Any, finished: Deferred[Any]) -> Any:
            in_flight.discard(finished)
            return result

        def paced() -> Deferred[Any]:
            """Submit at fixed times (open loop); fires when every flow it started ended."""
            assert rate is not None
            done: Deferred[Any] = Deferred()
            step = 1.0 / rate
            due = start + params["phase"] * step
            turn = 0

            def tick() -> None:
                nonlocal due, turn
                now = time.monotonic()
                while due <= now and due < window_end:
                    started = flow(clients[turn % len(clients)], due, in_window)
                    turn += 1
                    in_flight.add(started)
                    started.addBoth(forget, started)
                    due += step
                if due < window_end:
                    reactor.callLater(max(0.0, due - time.monotonic()), tick)
                else:
                    DeferredList(list(in_flight), consumeErrors=True).addBoth(done.callback)

            reactor.callLater(max(0.0, due - time.monotonic()), tick)
            return done

        def begin() -> None:
            if rate is None:
                work: Deferred[Any] = DeferredList(
                    [closed_loop(client) for client in clients], consumeErrors=True
                )
            else:
                work = paced()
            work.addCallback(lambda _: DeferredList([client.close() for client in clients]))
            work.addBoth(lambda _: reactor.stop())

        reactor.callLater(max(0.0, start - time.monotonic()), begin)
        reactor.callLater(max(0.0, hard_stop + 1.0 - time.monotonic()), reactor.stop)
        reactor.run(installSignalHandlers=False)
        result["unfinished"] = len(in_flight)
        result["errors"] += len(in_flight)
        connection.send(result)
    except Exception:
        _report_failure(connection)


# -- the parent: setup, passes, report ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Population:
    path: Path
    meguro_numbers: list[str]


def write_population(directory: Path, persons: int) -> Population:
    """A demo data file like simulators/data/demo.json with ``persons`` generated persons."""
    from codes.individual_number import make_individual_number

    entries = []
    records = []
    meguro_numbers = []
    for index in range(persons):
        meguro = f"{7_000_000_000 + index:015d}"
        setagaya = f"{8_000_000_000 + index:015d}"
        entries.append(
            {
                "name": f"ベンチ {index}",
                "individual_number": make_individual_number(f"{50_000_000_000 + index:011d}"),
                "registrations": {"meguro": meguro, "setagaya": setagaya},
            }
        )
        records.append(
            {
                "record_id": f"BENCH-TAX-2026-{index:06d}",
                "integrated_address_number": setagaya,
                "information_name": INFORMATION_NAME,
                "data_set": "0101",
                "items": {
                    "TK00000201010001": "2026",
                    "TK00000201010002": "1",
                    "TK00000201010003": "3500",
                    "TK00000201010004": str(50_000 + index),
                    "TK00000201010007": "1420000",
                    "TK00000201010008": "1980000",
                    "TK00000201010009": "0",
                },
            }
        )
        meguro_numbers.append(meguro)
    data = {
        "notes": "Generated by bench/flows.py: synthetic persons with valid check digits.",
        "persons": entries,
        "replica_records": {"meguro": [], "setagaya": records},
    }
    path = directory / "population.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return Population(path, meguro_numbers)


def write_box_config(
    directory: Path,
    pki: Path,
    population: Path,
    *,
    meguro_database: str | None = None,
    meguro_processes: int = 1,
    link_batching: dict[str, float] | None = None,
) -> Path:
    """A box configuration like twistd.conf: free ports, SQLite files in ``directory``
    (Meguro's database at ``meguro_database`` when given, served by ``meguro_processes``),
    ``link_batching`` (``[delivery]`` keys without their ``link_batch_`` prefix) when given."""
    batching = "".join(
        f"link_batch_{key} = {value:g}\n" for key, value in (link_batching or {}).items()
    )
    meguro_url = meguro_database or f"sqlite:///{directory / 'meguro.sqlite'}"
    ports = {name: free_port() for name in ("hub", "mn", "mb", "sn", "sb", "ctl")}
    text = f"""# Generated by bench/flows.py; delivery settings as in twistd.conf.
[renkei]
pki = {pki}
hub_address = https://127.0.0.1:{ports["hub"]}

[network]
database = sqlite:///{directory / "hub.sqlite"}
listen = tcp:port={ports["hub"]}:interface=127.0.0.1
address = https://127.0.0.1:{ports["hub"]}
permitted_list = {REPOSITORY / "simulators/network/data/permitted_list.csv"}
list_validity = 86400
permit_validity = 600

[institution:meguro]
code = {MEGURO}
name = 目黒区
kind = municipality
database = {meguro_url}
processes = {meguro_processes}
network_listen = tcp:port={ports["mn"]}:interface=127.0.0.1
network_address = https://127.0.0.1:{ports["mn"]}
back_office_listen = tcp:port={ports["mb"]}:interface=127.0.0.1
back_office_address = https://127.0.0.1:{ports["mb"]}
back_office_systems = {CARE_INSURANCE}
provides = {CARE_INFORMATION}

[back-office:meguro:{CARE_INSURANCE}]
affairs = JM90000000001000
information_names = {CARE_INFORMATION}

[institution:setagaya]
code = {SETAGAYA}
name = 世田谷区
kind = municipality
database = sqlite:///{directory / "setagaya.sqlite"}
network_listen = tcp:port={ports["sn"]}:interface=127.0.0.1
network_address = https://127.0.0.1:{ports["sn"]}
back_office_listen = tcp:port={ports["sb"]}:interface=127.0.0.1
back_office_address = https://127.0.0.1:{ports["sb"]}
back_office_systems = {LOCAL_TAX}
provides = {INFORMATION_NAME}

[back-office:setagaya:{LOCAL_TAX}]
affairs = JM90000000002000
information_names = {INFORMATION_NAME}

[delivery]
retry_initial = 0.5
retry_maximum = 60
lease = 30
poll_interval = 1
list_refresh = 300
retention_interval = 60
{batching}
[retention]
query_results = 7d

[demo]
data = {population}

[control]
listen = tcp:port={ports["ctl"]}:interface=127.0.0.1
address = http://127.0.0.1:{ports["ctl"]}
token = {directory / "control.token"}
"""
    path = directory / "box.conf"
    path.write_text(text, encoding="utf-8")
    return path


def box_command(config: Path, log: Path, as_processes: bool = False) -> list[str]:
    """The box in one process (the shape of most figures in docs/performance.md), or with
    ``as_processes`` every party in a process of its own under the supervisor (their logs
    beside ``log``, in ``logs/``), with its log in ``log``."""
    twistd = Path(sys.executable).parent / "twistd"
    shape = ("--log-dir", str(log.parent / "logs")) if as_processes else ("--single-process",)
    return [
        *(str(twistd), "-n", "--pidfile=", "-l", str(log)),
        *("renkei", "-c", str(config), *shape),
    ]


def start_box(
    supervisor: Supervisor, command: list[str], log: Path, timeout: float
) -> subprocess.Popen[bytes]:
    """Start the box and wait until it registered the demo population."""
    popen = subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.with_suffix(".stderr").open("wb"),
        start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the box
        preexec_fn=_kill_with_parent,
    )
    supervisor.popens.append(popen)
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        if BOX_READY_LINE in text:
            return popen
        if "renkei could not start" in text:
            raise RuntimeError(f"the box could not start; see {log}:\n{text[-3000:]}")
        if popen.poll() is not None:
            raise RuntimeError(f"the box exited with {popen.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the box did not register its population in {timeout:.0f} s")
        time.sleep(0.2)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def milliseconds(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif isinstance(value, dict):
                bucket = merged.setdefault(key, {})
                for name, count in value.items():
                    bucket[name] = bucket.get(name, 0) + count
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


def run_clients(
    supervisor: Supervisor,
    target: Callable[..., None],
    role: str,
    params: list[dict[str, Any]],
    warmup: float,
    duration: float,
    watched: dict[str, int],
) -> tuple[dict[str, Any], CpuWindow]:
    """Start client processes, release them together, sample CPU over the window and the
    memory of the one ``watched`` server, merge."""
    (watched_pid,) = watched.values()
    started = [spawn(supervisor, target, f"{role}-{i}", p) for i, p in enumerate(params)]
    for child, connection in started:
        receive(connection, child, 60)
    start = time.monotonic() + 0.3
    for _, connection in started:
        connection.send((start, warmup, duration))
    pids = {**with_parties(watched), **{child.name: child.pid or 0 for child, _ in started}}
    window = CpuWindow(pids)
    sleep_until(start + warmup)
    window.begin()
    end = start + warmup + duration
    while time.monotonic() < end:
        # The memory of the watched server (the box, or the echo server) through the window.
        window.memory.append((time.monotonic() - window.started, process_rss(watched_pid)))
        sleep_until(min(end, time.monotonic() + MEMORY_SAMPLE))
    window.memory.append((time.monotonic() - window.started, process_rss(watched_pid)))
    window.end()
    results = [receive(connection, child, GRACE + 30) for child, connection in started]
    for child, _ in started:
        child.join(10)
    return merge(results), window


def client_cores(window: CpuWindow, prefix: str) -> float:
    return round(sum(v for k, v in window.cores.items() if k.startswith(prefix)), 2)


def run_baseline(supervisor: Supervisor, settings: Settings, directory: Path) -> dict[str, Any]:
    lifetime = settings.warmup + settings.baseline_duration + GRACE + 120
    server, connection = spawn(
        supervisor,
        echo_server,
        "echo-server",
        {"pki": str(directory / "pki"), "log": str(directory / "echo.log"), "lifetime": lifetime},
    )
    try:
        port = receive(connection, server, 60)["port"]
        params = [
            {
                "pki": str(directory / "pki"),
                "port": port,
                "concurrency": settings.baseline_concurrency,
                "body": settings.body_bytes,
                "index": index,
            }
            for index in range(settings.baseline_processes)
        ]
        merged, window = run_clients(
            supervisor,
            echo_client,
            "echo-client",
            params,
            settings.warmup,
            settings.baseline_duration,
            {"server": server.pid or 0},
        )
    finally:
        with contextlib.suppress(OSError):
            connection.send("stop")
        server.join(10)
    latencies = merged.get("latencies", [])
    return {
        "requests_per_second": round(merged["completed"] / settings.baseline_duration, 1),
        "requests": merged["completed"],
        "errors": merged["errors"],
        "error_samples": merged.get("error_samples", []),
        "p50_ms": milliseconds(percentile(latencies, 0.50)),
        "p99_ms": milliseconds(percentile(latencies, 0.99)),
        "server_cores": window.cores["server"],
        "client_cores": client_cores(window, "bench-echo-client"),
        "machine_busy": window.machine_busy,
        "requests_per_server_cpu_second": round(
            merged["completed"] / settings.baseline_duration / window.cores["server"], 1
        )
        if window.cores["server"]
        else None,
    }


def flows_figures(merged: dict[str, Any], duration: float, window: CpuWindow) -> dict[str, Any]:
    latencies = merged.get("latencies", [])
    rate = merged["completed"] / duration
    polls = merged.get("polls_per_flow", [])
    box_cores = window.cores.get("box", 0.0)
    return {
        "flows_per_second": round(rate, 1),
        "flows": merged["completed"],
        "errors": merged["errors"],
        "error_samples": merged.get("error_samples", []),
        "final_states": merged.get("states", {}),
        "p50_ms": milliseconds(percentile(latencies, 0.50)),
        "p99_ms": milliseconds(percentile(latencies, 0.99)),
        "max_ms": milliseconds(max(latencies) if latencies else None),
        "submit_p50_ms": milliseconds(percentile(merged.get("submit_latencies", []), 0.50)),
        "flows_over_50_ms": sum(1 for value in latencies if value > SLOW),
        "slow_flows": sorted(merged.get("slow", [])),
        "polls_per_flow_mean": round(sum(polls) / len(polls), 2) if polls else None,
        "polls_per_second": round(merged.get("polls_in_window", 0) / duration, 1),
        "box_https_requests_per_second": round(
            rate * HOPS_PER_FLOW + merged.get("polls_in_window", 0) / duration, 1
        ),
        "box_cores": box_cores,
        "party_cores": party_cores(window),
        "client_cores": client_cores(window, "bench-flow-client"),
        "machine_busy": window.machine_busy,
        "flows_per_box_cpu_second": round(rate / box_cores, 1) if box_cores else None,
        "box_memory": memory_figures(window.memory),
    }


def run_flows(
    supervisor: Supervisor,
    settings: Settings,
    config: Path,
    population: Population,
    box_pid: int,
    rate: float | None,
    duration: float,
) -> dict[str, Any]:
    params = [
        {
            "config": str(config),
            "clients": settings.clients,
            "persons": population.meguro_numbers,
            "seed": settings.seed * 1000 + index + (0 if rate is None else 500),
            "poll_interval": settings.poll_interval,
            "rate": None if rate is None else rate / settings.processes,
            "phase": index / settings.processes,
        }
        for index in range(settings.processes)
    ]
    merged, window = run_clients(
        supervisor,
        flow_client,
        "flow-client",
        params,
        settings.warmup,
        duration,
        {"box": box_pid},
    )
    figures = flows_figures(merged, duration, window)
    if rate is not None:
        figures["offered_flows_per_second"] = round(rate, 1)
        figures["unfinished"] = merged.get("unfinished", 0)
    return figures


def query_states(database: Path) -> dict[str, int]:
    """Meguro's queries by state, read from its SQLite file (a cross-check)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT state, count(*) FROM query GROUP BY state").fetchall())


PROBLEMS = ("Traceback", "Unhandled", "internal error")


def box_log_problems(log: Path, markers: Sequence[str] = (*PROBLEMS, "refused")) -> int:
    """Problems logged by the box (and by the parties' processes, under the supervisor): the
    occurrences of ``markers`` (by default also "refused": no flow here is refused)."""
    logs = [log, *sorted((log.parent / "logs").glob("*.log"))]
    text = "".join(
        path.read_text(encoding="utf-8", errors="replace") for path in logs if path.exists()
    )
    return sum(text.count(marker) for marker in markers)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 4)


# -- printing ---------------------------------------------------------------------------------


def show(label: str, value: Any, unit: str = "") -> None:
    text = "n/a" if value is None else f"{value}{unit}"
    print(f"  {label:<48} {text}")


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print("\nmachine")
    show("date", m["date"])
    show("nproc", m["nproc"])
    show("CPU model", m["cpu_model"])
    show("kernel", m["kernel"])
    show("Python / Twisted", f"{m['python']} / {m['twisted']}")
    show("OpenSSL (pyOpenSSL)", f"{m['openssl']} ({m['pyopenssl']})")
    show("klein / treq / cryptography", f"{m['klein']} / {m['treq']} / {m['cryptography']}")
    show("load average at start (1, 5, 15 min)", m["load_average_at_start"])
    s = report["settings"]
    print("\nsettings")
    show(
        "windows (warm-up, baseline, flows, half rate)",
        f"{s['warmup']} s, {s['baseline_duration']} s, {s['duration']} s, "
        f"{s['half_rate_duration']} s",
    )
    show(
        "baseline load",
        f"{s['baseline_processes']} processes x {s['baseline_concurrency']} concurrent, "
        f"{s['body_bytes']} B body",
    )
    polling = f"poll every {s['poll_interval'] * 1000:g} ms" if s["poll_interval"] else "long poll"
    show(
        "flow load",
        f"{s['processes']} processes x {s['clients']} back-office clients, {polling}, "
        f"{s['persons']} persons",
    )
    batching = report["link_batching"]
    show(
        "link batching ([delivery] link_batch_*)",
        ", ".join(f"{key} {value:g}" for key, value in batching.items()) or "as twistd.conf",
    )
    c = report["crypto"]
    print("\n0. crypto floor: the cryptography of one flow, in the benchmark process")
    for step, spent in c["steps_ms"].items():
        show(step, spent, " ms")
    show(
        f"CPU per flow (mean of {c['iterations']})",
        round(c["cpu_seconds_per_flow"] * 1000, 3),
        " ms",
    )
    show(f"floor: {c['cores']} cores / CPU per flow", c["floor_flows_per_second"], " flows/s")
    b = report["baseline"]
    print("\n1. baseline: bare mutual-TLS keep-alive echo")
    show("requests/s", b["requests_per_second"])
    show("p50 / p99 latency", f"{b['p50_ms']} / {b['p99_ms']}", " ms")
    show("errors", b["errors"])
    show(
        "CPU: server / clients / machine busy",
        f"{b['server_cores']} / {b['client_cores']} cores / {b['machine_busy'] * 100:.0f}%",
    )
    show("requests per server CPU-second", b["requests_per_server_cpu_second"])
    for title, key in (
        ("2. flows, closed loop (max rate)", "flows"),
        ("3. flows, open loop at half the max rate", "half_rate"),
    ):
        f = report.get(key)
        if not f:
            continue
        print(f"\n{title}")
        if "offered_flows_per_second" in f:
            show("offered flows/s", f["offered_flows_per_second"])
        show("completed flows/s", f["flows_per_second"])
        show("p50 / p99 / max latency", f"{f['p50_ms']} / {f['p99_ms']} / {f['max_ms']}", " ms")
        show("submit (POST /queries) p50", f["submit_p50_ms"], " ms")
        show(f"flows over {SLOW * 1000:g} ms", f["flows_over_50_ms"])
        if key == "half_rate" and f["slow_flows"]:
            moments = ", ".join(f"{start:.1f}" for start, _ in f["slow_flows"][:24])
            show("  due at (s into the window)", moments)
        show("errors", f["errors"])
        show("final states seen by clients", f["final_states"])
        show(
            "polls per flow (mean) / polls/s",
            f"{f['polls_per_flow_mean']} / {f['polls_per_second']}",
        )
        show("HTTPS requests/s the box served", f["box_https_requests_per_second"])
        show(
            "CPU: box / clients / machine busy",
            f"{f['box_cores']} / {f['client_cores']} cores / {f['machine_busy'] * 100:.0f}%",
        )
        if f.get("party_cores"):
            show("CPU by party (cores)", f["party_cores"])
        show("flows per box CPU-second", f["flows_per_box_cpu_second"])
        memory = f["box_memory"]
        if memory:
            show(
                "box RSS: first / last / max",
                f"{memory['rss_first_mib']} / {memory['rss_last_mib']} / "
                f"{memory['rss_max_mib']} MiB",
            )
            show(
                "box RSS trend over the window's second half",
                f"{memory['second_half_mib_per_minute']:+} MiB/min "
                f"({'flat' if memory['flat'] else 'GROWING'})",
            )
        for sample in f["error_samples"]:
            print(f"    error: {sample}")
    r = report["ratios"]
    t = report["targets"]
    print("\nratios against the baseline of this run")
    show("flows/s / baseline requests/s", r["flows_per_baseline_request"])
    show("flows/s / crypto floor flows/s", r["flows_per_crypto_floor"])
    show("box HTTPS requests/s / baseline requests/s", r["box_requests_per_baseline_request"])
    show(
        "flows per box CPU-s / requests per server CPU-s",
        r["flows_per_cpu_second_per_baseline"],
    )
    print("\ntargets")
    show(f">= {TARGET_FLOWS_PER_SECOND:g} flows/s", verdict(t["flows_per_second"]))
    show(f"flows/s / baseline >= {TARGET_BASELINE_RATIO:g}", verdict(t["baseline_ratio"]))
    show(
        f"flows/s / crypto floor >= {TARGET_CRYPTO_FLOOR_RATIO:g}",
        verdict(t["crypto_floor_ratio"]),
    )
    show(f"p99 < {TARGET_P99_HALF_RATE * 1000:g} ms at half max rate", verdict(t["p99_half_rate"]))
    show("box memory flat at half max rate", verdict(t["memory_flat_half_rate"]))
    show("errors", "none" if report["errors"] == 0 else report["errors"])
    if report.get("box"):
        show("Meguro queries by state (database)", report["box"]["meguro_query_states"])
        show("box log lines with problems", report["box"]["log_problems"])


# -- the crypto floor -------------------------------------------------------------------------

CRYPTO_STEPS = (
    "hub signs the permit",
    "provider verifies the permit",
    "provider signs the payload",
    "provider encrypts the payload",
    "requester decrypts the payload",
    "requester verifies the payload",
)


def flow_messages() -> tuple[Permit, ProvisionPayload]:
    """The two signed messages of one flow: the hub's permit for Meguro's query of Setagaya's
    local-tax information (`messages.Permit`) and Setagaya's answer (`messages.ProvisionPayload`,
    one local-tax record of the demo population), unsigned."""
    from middleware import messages

    issued = datetime.datetime(2026, 12, 7, 5, 0, tzinfo=datetime.UTC)
    permit = messages.Permit(
        transaction_number="20261207050000000001",
        requester=MEGURO,
        provider=SETAGAYA,
        affair="JM90000000001000",
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider_fugo="0123456789ABCDEF0123456789ABCDEF",
        issued_at=issued,
        expires_at=issued + datetime.timedelta(minutes=30),
    )
    payload = messages.ProvisionPayload(
        transaction_number=permit.transaction_number,
        information_name=INFORMATION_NAME,
        provider=SETAGAYA,
        requester=MEGURO,
        created_at=issued,
        records=(
            messages.PayloadRecord(
                data_set="0101",
                record_id="BENCH-TAX-2026-000001",
                items=(
                    ("TK00000201010001", "2026"),
                    ("TK00000201010002", "1"),
                    ("TK00000201010003", "3500"),
                    ("TK00000201010004", "50001"),
                    ("TK00000201010007", "1420000"),
                    ("TK00000201010008", "1980000"),
                    ("TK00000201010009", "0"),
                ),
            ),
        ),
    )
    return permit, payload


def crypto_floor(pki: Path, iterations: int) -> dict[str, Any]:
    """CPU seconds of the cryptography one flow needs, measured in this process.

    With the run's PKI and the project's own crypto functions, as the parties use them: the
    hub signs a permit (`Signer`), the provider verifies it against the pinned hub signing
    certificate (`PinnedVerifier`), signs its payload (one local-tax record of the demo
    population) and seals it for the requester's encryption certificate (`envelope.seal`);
    the requester opens it (`open_envelope`) and verifies it up to the network CA
    (`CAVerifier`). Only those calls are timed (`time.process_time`); building the elements,
    serializing and parsing between them are not. The figure is the mean over ``iterations``
    rounds after a few untimed ones.
    """
    from lxml import etree

    from crypto.envelope import open_envelope, seal
    from crypto.pki import PkiLayout, load_certificate
    from crypto.xmlsig import CAVerifier, PinnedVerifier, Signer
    from middleware import messages

    layout = PkiLayout(pki)
    ca = load_certificate(layout.ca().certificate)
    hub_signer = Signer(layout.hub_signing().load())
    permit_verifier = PinnedVerifier(load_certificate(layout.hub_signing().certificate))
    provider_signer = Signer(layout.institution_signing(SETAGAYA).load())
    encryption = layout.institution_encryption(MEGURO).load()
    payload_verifier = CAVerifier(ca)
    permit, payload = flow_messages()
    totals = [0.0] * len(CRYPTO_STEPS)

    def one_flow(timed: bool) -> None:
        permit_element = messages.to_element(permit)
        payload_element = messages.to_element(payload)
        spent = []
        start = time.process_time()
        signed_permit = hub_signer.sign(permit_element)
        spent.append(time.process_time())
        permit_verifier.verify(signed_permit)
        spent.append(time.process_time())
        signed_payload = provider_signer.sign(payload_element)
        spent.append(time.process_time())
        plaintext = etree.tostring(signed_payload, encoding="UTF-8", xml_declaration=True)
        sealed_at = time.process_time()
        sealed = seal(plaintext, encryption.certificate)
        spent.append(time.process_time())
        opened = open_envelope(sealed, encryption)
        spent.append(time.process_time())
        element = etree.fromstring(opened)
        verified_at = time.process_time()
        payload_verifier.verify(element)
        spent.append(time.process_time())
        if timed:
            starts = [start, spent[0], spent[1], sealed_at, spent[3], verified_at]
            for index, (begin, end) in enumerate(zip(starts, spent, strict=True)):
                totals[index] += end - begin

    for _ in range(5):
        one_flow(False)
    for _ in range(iterations):
        one_flow(True)
    per_flow = sum(totals) / iterations
    cores = os.cpu_count() or 1
    return {
        "iterations": iterations,
        "steps_ms": {
            step: round(total / iterations * 1000, 3)
            for step, total in zip(CRYPTO_STEPS, totals, strict=True)
        },
        "cpu_seconds_per_flow": round(per_flow, 6),
        "cores": cores,
        "floor_flows_per_second": round(cores / per_flow, 1),
    }


# -- main -------------------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    settings, arguments = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from crypto.pki import InstitutionEntry, init_pki

    began = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="renkei-bench-"))
    supervisor = Supervisor()
    report: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__}
    report["link_batching"] = {
        key: value
        for key, value in (
            ("size", arguments.link_batch_size),
            ("linger", arguments.link_batch_linger),
            ("in_flight", arguments.link_batch_in_flight),
        )
        if value is not None
    }
    try:
        print(f"bench/flows.py: temporary directory {directory}", flush=True)
        init_pki(
            directory / "pki",
            [
                InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
                InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
            ],
        )
        print("0/3 crypto floor: one flow's cryptography ...", flush=True)
        report["crypto"] = crypto_floor(directory / "pki", settings.crypto_rounds)
        print(f"    {report['crypto']['cpu_seconds_per_flow'] * 1000:.2f} ms per flow", flush=True)
        print("1/3 baseline: mutual-TLS echo ...", flush=True)
        report["baseline"] = run_baseline(supervisor, settings, directory)
        print(f"    {report['baseline']['requests_per_second']} requests/s", flush=True)

        population = write_population(directory, settings.persons)
        config = write_box_config(
            directory, directory / "pki", population.path, link_batching=report["link_batching"]
        )
        log = directory / "box.log"
        print(f"    starting the box, registering {settings.persons} persons ...", flush=True)
        command = box_command(config, log, arguments.parties_as_processes)
        box = start_box(supervisor, command, log, timeout=60 + settings.persons)

        print("2/3 flows, closed loop ...", flush=True)
        report["flows"] = run_flows(
            supervisor, settings, config, population, box.pid, None, settings.duration
        )
        print(f"    {report['flows']['flows_per_second']} flows/s", flush=True)
        half = report["flows"]["flows_per_second"] / 2
        if half > 0:
            print(f"3/3 flows, open loop at {half:.1f} flows/s ...", flush=True)
            report["half_rate"] = run_flows(
                supervisor,
                settings,
                config,
                population,
                box.pid,
                half,
                settings.half_rate_duration,
            )
        stop_popen(box)
        report["box"] = {
            "meguro_query_states": query_states(directory / "meguro.sqlite"),
            "log_problems": box_log_problems(log),
        }
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process", file=sys.stderr)
        return 130
    finally:
        supervisor.stop_all()
        if arguments.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)

    baseline = report["baseline"]["requests_per_second"]
    flows = report["flows"]["flows_per_second"]
    half_rate = report.get("half_rate")
    report["ratios"] = {
        "flows_per_baseline_request": ratio(flows, baseline),
        "flows_per_crypto_floor": ratio(flows, report["crypto"]["floor_flows_per_second"]),
        "box_requests_per_baseline_request": ratio(
            report["flows"]["box_https_requests_per_second"], baseline
        ),
        "flows_per_cpu_second_per_baseline": ratio(
            report["flows"]["flows_per_box_cpu_second"],
            report["baseline"]["requests_per_server_cpu_second"],
        ),
    }
    report["targets"] = {
        "flows_per_second": flows >= TARGET_FLOWS_PER_SECOND,
        "baseline_ratio": (report["ratios"]["flows_per_baseline_request"] or 0)
        >= TARGET_BASELINE_RATIO,
        "crypto_floor_ratio": (report["ratios"]["flows_per_crypto_floor"] or 0)
        >= TARGET_CRYPTO_FLOOR_RATIO,
        "p99_half_rate": None
        if not half_rate or half_rate["p99_ms"] is None
        else half_rate["p99_ms"] < TARGET_P99_HALF_RATE * 1000,
        "memory_flat_half_rate": half_rate["box_memory"].get("flat")
        if half_rate and half_rate["box_memory"]
        else None,
    }
    report["errors"] = (
        report["baseline"]["errors"]
        + report["flows"]["errors"]
        + (half_rate["errors"] if half_rate else 0)
    )
    report["elapsed_seconds"] = round(time.monotonic() - began, 1)
    print_report(report)
    print(f"\nelapsed {report['elapsed_seconds']} s")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {arguments.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
