"""The one configuration loader: the INI file given to ``twistd renkei -c``.

A file describes a whole network in a box: a ``[network]`` section for the hub (omit it to
run institution nodes against a hub elsewhere), one ``[institution:NAME]`` section per
intermediate server with one ``[back-office:NAME:SYSTEM]`` section per back-office system
it serves (what that system may do), ``[delivery]`` for the outbox, and optionally
``[portal]`` (the マイナポータル simulator), ``[jobs]`` (the periodic jobs), ``[retention]``
(how long each kind of data is kept), ``[backup]`` (the scheduled backups), ``[health]`` and
``[alerts]`` (what the health looks at and where its changes are posted), ``[demo]``,
``[population]`` and ``[control]``. Relative paths are read relative to the file. See
docs/operations.md for every key.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from codes import errors
from codes.errors import RenkeiError
from codes.institution import INSTITUTION_KINDS, PORTAL_KIND, validate_institution_code
from codes.typed import validate_affair_code, validate_information_name_code
from middleware.network import MAX_BATCH_BYTES, MAX_BATCH_ITEMS
from middleware.outbox import RetryPolicy
from middleware.period import Period, parse_period

__all__ = [
    "LOOPBACK",
    "RETENTION_KINDS",
    "AlertsConfig",
    "BackOfficeSystem",
    "BackupConfig",
    "BatchingConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "HealthConfig",
    "InstitutionConfig",
    "JobsConfig",
    "NetworkConfig",
    "OutsideMember",
    "PopulationConfig",
    "PortalConfig",
    "RetentionConfig",
    "UnknownMember",
    "load_config",
]


class ConfigError(Exception):
    """The configuration file is missing, unreadable or inconsistent."""


class UnknownMember(ConfigError):
    """No institution of the configuration has this name or code; ``known``: the names of
    those that could have been meant, ``among``: what they are."""

    def __init__(self, message: str, name: str, known: tuple[str, ...], among: str) -> None:
        super().__init__(message)
        self.name = name
        self.known = known
        self.among = among


@dataclass(frozen=True)
class NetworkConfig:
    """The hub: its database, listener, address and policies."""

    database: str
    listen: str
    address: str
    permitted_list: Path
    list_validity: float
    permit_validity: float
    # Who may act for whom (委任), listed in the permitted-query list; optional.
    delegations: Path | None = None
    # The hub's health endpoint (plain HTTP, loopback); optional.
    health_listen: str | None = None


@dataclass(frozen=True)
class BackOfficeSystem:
    """One back-office system of an institution and what it may do (per-system authorization):
    query under the procedures of ``affairs`` (事務), register and delete the 副本 of
    ``information_names``. Every system may register persons (the integrated-address
    function serves the whole institution)."""

    name: str
    affairs: tuple[str, ...]
    information_names: tuple[str, ...]


@dataclass(frozen=True)
class InstitutionConfig:
    """One intermediate server (node)."""

    name: str
    code: str
    display_name: str
    kind: str
    database: str
    network_listen: str
    network_address: str
    back_office_listen: str
    back_office_address: str
    back_office_systems: tuple[str, ...]
    provides: tuple[str, ...]
    # Seconds a held provision waits for a staff decision before it is refused (HoldExpired).
    hold_lifetime: float = 72 * 3600.0
    console_listen: str | None = None
    console_address: str | None = None
    console_idle_timeout: float | None = None
    metrics_listen: str | None = None
    # A folder watched for 副本 registration files (docs/replica-files.md); optional.
    replica_inbox: Path | None = None
    # What each of ``back_office_systems`` may do, in the same order.
    systems: tuple[BackOfficeSystem, ...] = ()
    # How many processes serve the institution, sharing its database (PostgreSQL) and its
    # listening ports (SO_REUSEPORT).
    processes: int = 1
    # 提供側不開示: information names whose provisions this institution hides from the
    # person's disclosure of their records (each one it provides).
    non_disclosed: tuple[str, ...] = ()

    def system(self, name: str) -> BackOfficeSystem | None:
        """The back-office system ``name`` of this institution, or None."""
        for system in self.systems:
            if system.name == name:
                return system
        return None

    def back_office_system(self, name: str) -> BackOfficeSystem:
        """The back-office system ``name`` (CertificateNotAuthorized if it has none)."""
        system = self.system(name)
        if system is None:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=name)
        return system


@dataclass(frozen=True)
class OutsideMember:
    """An institution whose intermediate server is not renkei's (``external = true``): a
    vendor's system under test or another team's simulator. The hub lists it, puts it in the
    permitted-query list by its kind and routes to ``network_address``; its certificates come
    from the network CA (``renkei pki enrol``)."""

    name: str
    code: str
    display_name: str
    kind: str
    network_address: str
    provides: tuple[str, ...]


@dataclass(frozen=True)
class PortalConfig:
    """マイナポータル, a party of the network acting for persons (simulators/portal/): its
    (emulated) institution code, database, network listener (from the hub), web pages
    (HTTPS, for persons) and the demo residents it holds (``residents``: a JSON file with
    ``persons``, each a ``name`` and an ``individual_number``), who sign in as if with their
    card. A session ends after ``session_idle`` seconds without a page."""

    code: str
    display_name: str
    database: str
    network_listen: str
    network_address: str
    web_listen: str
    web_address: str
    residents: Path
    session_idle: float = 1800.0
    kind: str = PORTAL_KIND
    name: str = "portal"
    # The portal provides no information name (a member of the network like the others).
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlConfig:
    """The control API (docs/control.md): where it listens (loopback only), its address, and
    the file holding its token (made at first start)."""

    listen: str
    address: str
    token: Path


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _loopback_only(listen: str) -> str:
    interface = dict(part.split("=", 1) for part in listen.split(":")[1:] if "=" in part).get(
        "interface"
    )
    if interface not in LOOPBACK:
        raise ValueError(
            f"[control] listen {listen!r} must name a loopback interface"
            " (interface=127.0.0.1): the control API moves the network's clock"
        )
    return listen


@dataclass(frozen=True)
class JobsConfig:
    """The periodic jobs of every party (``[jobs]``; middleware/jobs.py): the backoff after
    a failed run (seconds, doubling from ``retry_initial`` up to ``retry_maximum``) and how
    many runs of each job and outcome are kept in the database."""

    retry_initial: float = 1.0
    retry_maximum: float = 60.0
    keep_runs: int = 100


@dataclass(frozen=True)
class BatchingConfig:
    """How a party's mutual-TLS link gathers its messages to one destination into one request
    (``[delivery]`` ``link_batch_*``; adapters/link_batch.py): a batch leaves when it holds
    ``size`` messages, when the next one would take its documents past ``max_bytes``, or
    ``linger`` seconds after its first message (0: at the reactor's next turn), unless
    ``in_flight`` requests to its destination are unanswered (0: no such wait): then when one
    is answered. A ``size`` of 1 sends every message alone, as one request each. The defaults
    are what measured best (docs/performance.md, "Batched links")."""

    size: int = 32
    max_bytes: int = 1_048_576
    linger: float = 0.0
    in_flight: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1


# At most half the receiver's cap in documents: base64 adds a third, and the items' markup.
_MAX_LINK_BATCH_BYTES = MAX_BATCH_BYTES // 2


def _batching(section: configparser.SectionProxy) -> BatchingConfig:
    size = _count(section, "link_batch_size", BatchingConfig.size, 1)
    if size > MAX_BATCH_ITEMS:
        raise ValueError(f"[{section.name}] link_batch_size must be {MAX_BATCH_ITEMS} or less")
    max_bytes = _count(section, "link_batch_bytes", BatchingConfig.max_bytes, 1)
    if max_bytes > _MAX_LINK_BATCH_BYTES:
        raise ValueError(
            f"[{section.name}] link_batch_bytes must be {_MAX_LINK_BATCH_BYTES} or less"
        )
    linger = section.getfloat("link_batch_linger", BatchingConfig.linger)
    if not 0 <= linger <= 1:
        raise ValueError(f"[{section.name}] link_batch_linger must be between 0 and 1 second")
    in_flight = _count(section, "link_batch_in_flight", BatchingConfig.in_flight, 0)
    return BatchingConfig(size=size, max_bytes=max_bytes, linger=linger, in_flight=in_flight)


# The default periods: 情報提供等記録 are kept 7 years (マイナポータル FAQ 2397), and the audit
# log of the views of them as long; what is only working data, weeks.
_SEVEN_YEARS = Period(years=7)
_THIRTY_DAYS = Period(seconds=30 * 86400.0)
_SEVEN_DAYS = Period(seconds=7 * 86400.0)


@dataclass(frozen=True)
class RetentionConfig:
    """How long every party keeps each kind of data (``[retention]``; middleware/retention.py)
    and how its ``purge`` job deletes what is past it: every ``interval`` seconds, at most
    ``batch`` rows of a kind per transaction.

    - ``provision_records``: 情報提供等記録, from when they were recorded (7 years: the law's);
    - ``audit_log``: the staff audit log, from when each entry was written;
    - ``held_contents``: the content of a held provision (the personal data an approver saw),
      from its decision or expiry;
    - ``outbox_bodies``: the document of a message delivered (or refused for good), from then;
    - ``replica_file_answers``: the answer kept for a 副本 file's Idempotency-Key;
    - ``query_results``: a query's result, from when the query ended.
    """

    interval: float = 3600.0
    batch: int = 1000
    provision_records: Period = _SEVEN_YEARS
    audit_log: Period = _SEVEN_YEARS
    held_contents: Period = _THIRTY_DAYS
    outbox_bodies: Period = _THIRTY_DAYS
    replica_file_answers: Period = _THIRTY_DAYS
    query_results: Period = _SEVEN_DAYS


RETENTION_KINDS = (  # the periods of RetentionConfig, one per kind of data kept
    "provision_records",
    "audit_log",
    "held_contents",
    "outbox_bodies",
    "replica_file_answers",
    "query_results",
)


@dataclass(frozen=True)
class BackupConfig:
    """The scheduled backups of every party (``[backup]``; middleware/backup.py): into
    ``directory`` (one folder per party), every ``interval`` seconds, the newest ``keep`` of
    each party kept."""

    directory: Path
    interval: float = 86400.0
    keep: int = 7


@dataclass(frozen=True)
class HealthConfig:
    """What every party's health looks at (``[health]``; middleware/health.py): how often,
    the outbox backlog and the wait of its oldest message above which it warns, and how long
    before its permitted-query list expires it warns (None: a quarter of the list's
    validity)."""

    interval: float = 5.0
    outbox_backlog: int = 1000
    outbox_wait: float = 60.0
    list_warning: float | None = None


@dataclass(frozen=True)
class AlertsConfig:
    """Where the parties post the changes of their health (``[alerts]``; adapters/alerts.py):
    a webhook taking Alertmanager's JSON (version 4), the receiver's name in it, the backoff
    between attempts, how many attempts a notification gets and how long one may take."""

    webhook: str
    receiver: str = "renkei"
    retry_initial: float = 1.0
    retry_maximum: float = 60.0
    attempts: int = 10
    timeout: float = 10.0


@dataclass(frozen=True)
class PopulationConfig:
    """The generated population the box loads at start: its size and seed."""

    size: str
    seed: int


@dataclass(frozen=True)
class Config:
    """Everything one ``twistd renkei`` process runs."""

    path: Path
    pki: Path
    hub_address: str
    network: NetworkConfig | None
    institutions: tuple[InstitutionConfig, ...]
    retry: RetryPolicy
    poll_interval: float
    list_refresh: float
    retention_interval: float
    demo_data: Path | None
    # A generated population loaded at start ([population]; docs/population.md).
    population: PopulationConfig | None = None
    # The control API of the network's clock and faults ([control]; docs/control.md).
    control: ControlConfig | None = None
    # Institutions of the network whose intermediate server is not ours (external = true).
    outside_members: tuple[OutsideMember, ...] = ()
    # The periodic jobs' backoff and the runs kept ([jobs]).
    jobs: JobsConfig = JobsConfig()
    # What the parties' health looks at ([health]) and where its changes go ([alerts]).
    health: HealthConfig = HealthConfig()
    alerts: AlertsConfig | None = None
    # How long each kind of data is kept ([retention]) and the scheduled backups ([backup]).
    retention: RetentionConfig = RetentionConfig()
    backup: BackupConfig | None = None
    # マイナポータル ([portal]), a party of the network when configured.
    portal: PortalConfig | None = None
    # Seconds between two お知らせ状況確認 of a node (how its notices stand at the hub).
    notice_status_interval: float = 60.0
    # How the mutual-TLS links batch messages ([delivery] link_batch_*).
    batching: BatchingConfig = BatchingConfig()

    @property
    def members(self) -> tuple[InstitutionConfig | OutsideMember, ...]:
        """Every institution of the network: ours, then the outside members."""
        return (*self.institutions, *self.outside_members)

    def member(self, name_or_code: str) -> InstitutionConfig | OutsideMember:
        """Any institution of the network by its section name or its institution code."""
        for member in self.members:
            if name_or_code in (member.name, member.code):
                return member
        raise UnknownMember(
            f"no institution {name_or_code!r} in {self.path}",
            name_or_code,
            tuple(member.name for member in self.members),
            f"the institutions of {self.path}",
        )

    def institution(self, name_or_code: str) -> InstitutionConfig:
        """An institution by its section name (``meguro``) or its institution code."""
        for institution in self.institutions:
            if name_or_code in (institution.name, institution.code):
                return institution
        raise UnknownMember(
            f"no institution {name_or_code!r} in {self.path}",
            name_or_code,
            tuple(institution.name for institution in self.institutions),
            f"the institutions of {self.path} with a node here",
        )


def _database_url(value: str, base: Path) -> str:
    if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        return "sqlite:///" + str((base / value.removeprefix("sqlite:///")).resolve())
    return value


def load_config(path: Path) -> Config:
    """Read and check a configuration file; raise ConfigError with a clear message."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as failure:
        raise ConfigError(f"cannot read {path}: {failure.strerror}") from None
    except configparser.Error as failure:
        raise ConfigError(f"{path}: {failure}") from None
    base = path.resolve().parent
    try:
        return _build(parser, path, base)
    except (ValueError, configparser.Error) as failure:
        raise ConfigError(f"{path}: {failure}") from None
    except RenkeiError as failure:
        raise ConfigError(f"{path}: {failure.message_en}") from None
    except KeyError as failure:
        raise ConfigError(f"{path}: {failure.args[0]}") from None


def _value(section: configparser.SectionProxy, key: str) -> str:
    try:
        return section[key]
    except KeyError:
        raise KeyError(f"[{section.name}] has no {key!r}") from None


def _processes(section: configparser.SectionProxy) -> int:
    """``processes``: 1 or more; more than one needs a database they can share (PostgreSQL)."""
    processes = section.getint("processes", 1)
    if processes < 1:
        raise ValueError(f"[{section.name}] processes must be 1 or more")
    if processes > 1 and not _value(section, "database").startswith("postgresql"):
        raise ValueError(
            f"[{section.name}] processes = {processes} needs a PostgreSQL database: the"
            " processes share it"
        )
    return processes


def _system(
    parser: configparser.ConfigParser, institution: str, name: str, provides: tuple[str, ...]
) -> BackOfficeSystem:
    """``[back-office:INSTITUTION:SYSTEM]``: the 事務 a system queries under and the
    information names whose 副本 it keeps (each one provided by the institution)."""
    section_name = f"back-office:{institution}:{name}"
    if not parser.has_section(section_name):
        raise KeyError(
            f"[institution:{institution}] names the back-office system {name!r}:"
            f" [{section_name}] must say what it may do (affairs, information_names)"
        )
    section = parser[section_name]
    information_names = tuple(
        validate_information_name_code(code)
        for code in section.get("information_names", "").split()
    )
    for code in information_names:
        if code not in provides:
            raise ValueError(
                f"[{section_name}] keeps the 副本 of {code}, which"
                f" [institution:{institution}] does not provide"
            )
    return BackOfficeSystem(
        name=name,
        affairs=tuple(validate_affair_code(code) for code in section.get("affairs", "").split()),
        information_names=information_names,
    )


def _positive(section: configparser.SectionProxy, key: str, default: float) -> float:
    value = section.getfloat(key, default)
    if value <= 0:
        raise ValueError(f"[{section.name}] {key} must be above 0")
    return value


def _backoff(
    section: configparser.SectionProxy, initial: float, maximum: float
) -> tuple[float, float]:
    """``retry_initial`` and ``retry_maximum`` of a section: a backoff that never shrinks."""
    retry_initial = _positive(section, "retry_initial", initial)
    retry_maximum = _positive(section, "retry_maximum", maximum)
    if retry_maximum < retry_initial:
        raise ValueError(f"[{section.name}] retry_maximum must not be below retry_initial")
    return retry_initial, retry_maximum


def _count(section: configparser.SectionProxy, key: str, default: int, least: int) -> int:
    value = section.getint(key, default)
    if value < least:
        raise ValueError(f"[{section.name}] {key} must be {least} or more")
    return value


def _jobs(parser: configparser.ConfigParser) -> JobsConfig:
    """``[jobs]`` (optional): the backoff of a failed job and the runs kept."""
    if not parser.has_section("jobs"):
        return JobsConfig()
    section = parser["jobs"]
    retry_initial, retry_maximum = _backoff(
        section, JobsConfig.retry_initial, JobsConfig.retry_maximum
    )
    return JobsConfig(
        retry_initial, retry_maximum, _count(section, "keep_runs", JobsConfig.keep_runs, 1)
    )


def _period(section: configparser.SectionProxy, key: str, default: Period) -> Period:
    text = section.get(key)
    if not text:
        return default
    try:
        return parse_period(text)
    except ValueError as failure:
        raise ValueError(f"[{section.name}] {key}: {failure}") from None


def _retention(parser: configparser.ConfigParser) -> RetentionConfig:
    """``[retention]`` (optional): how long each kind of data is kept, and the purge."""
    if not parser.has_section("retention"):
        return RetentionConfig()
    section = parser["retention"]
    known = {"interval", "batch", *RETENTION_KINDS}
    for key in section:
        if key not in known and key not in parser.defaults():
            raise ValueError(
                f"[retention] {key} is not a kind of data kept: one of"
                f" {', '.join(RETENTION_KINDS)} (or interval, batch)"
            )
    default = RetentionConfig()
    periods = {kind: _period(section, kind, getattr(default, kind)) for kind in RETENTION_KINDS}
    return RetentionConfig(
        interval=_positive(section, "interval", default.interval),
        batch=_count(section, "batch", default.batch, 1),
        **periods,
    )


def _backup(parser: configparser.ConfigParser, base: Path) -> BackupConfig | None:
    """``[backup]`` (optional): no scheduled backup unless it names a directory."""
    if not parser.has_section("backup") or not parser["backup"].get("directory"):
        return None
    section = parser["backup"]
    return BackupConfig(
        directory=base / section["directory"],
        interval=_positive(section, "interval", BackupConfig.interval),
        keep=_count(section, "keep", BackupConfig.keep, 1),
    )


def _health(parser: configparser.ConfigParser) -> HealthConfig:
    """``[health]`` (optional): what every party's health looks at."""
    if not parser.has_section("health"):
        return HealthConfig()
    section = parser["health"]
    return HealthConfig(
        interval=_positive(section, "interval", HealthConfig.interval),
        outbox_backlog=_count(section, "outbox_backlog", HealthConfig.outbox_backlog, 0),
        outbox_wait=_positive(section, "outbox_wait", HealthConfig.outbox_wait),
        list_warning=(
            _positive(section, "list_warning", 1.0) if section.get("list_warning") else None
        ),
    )


def _alerts(parser: configparser.ConfigParser) -> AlertsConfig | None:
    """``[alerts]`` (optional): the webhook the health's changes are posted to."""
    if not parser.has_section("alerts"):
        return None
    section = parser["alerts"]
    webhook = _value(section, "webhook")
    if not webhook.startswith(("http://", "https://")):
        raise ValueError(f"[alerts] webhook {webhook!r} is not an http:// or https:// URL")
    retry_initial, retry_maximum = _backoff(
        section, AlertsConfig.retry_initial, AlertsConfig.retry_maximum
    )
    return AlertsConfig(
        webhook=webhook,
        receiver=section.get("receiver", AlertsConfig.receiver),
        retry_initial=retry_initial,
        retry_maximum=retry_maximum,
        attempts=_count(section, "attempts", AlertsConfig.attempts, 1),
        timeout=_positive(section, "timeout", AlertsConfig.timeout),
    )


def _portal(parser: configparser.ConfigParser, base: Path) -> PortalConfig | None:
    """``[portal]`` (optional): マイナポータル, its listeners and its demo residents."""
    if not parser.has_section("portal"):
        return None
    section = parser["portal"]
    return PortalConfig(
        code=validate_institution_code(_value(section, "code")),
        display_name=section.get("name", "マイナポータル"),
        database=_database_url(_value(section, "database"), base),
        network_listen=_value(section, "network_listen"),
        network_address=_value(section, "network_address"),
        web_listen=_value(section, "web_listen"),
        web_address=_value(section, "web_address"),
        residents=base / _value(section, "residents"),
        session_idle=_positive(section, "session_idle", PortalConfig.session_idle),
    )


def _build(parser: configparser.ConfigParser, path: Path, base: Path) -> Config:
    if not parser.has_section("renkei"):
        raise KeyError("the [renkei] section is missing")
    renkei = parser["renkei"]
    network = None
    if parser.has_section("network"):
        section = parser["network"]
        network = NetworkConfig(
            database=_database_url(_value(section, "database"), base),
            listen=_value(section, "listen"),
            address=_value(section, "address"),
            permitted_list=base / _value(section, "permitted_list"),
            list_validity=section.getfloat("list_validity", 86400.0),
            permit_validity=section.getfloat("permit_validity", 600.0),
            delegations=(base / section["delegations"] if section.get("delegations") else None),
            health_listen=section.get("health_listen"),
        )
    institutions = []
    outside: list[OutsideMember] = []
    for name in parser.sections():
        if not name.startswith("institution:"):
            continue
        section = parser[name]
        if _value(section, "kind") not in INSTITUTION_KINDS:
            raise ValueError(
                f"[{name}] kind {section['kind']!r} is not one of {', '.join(INSTITUTION_KINDS)}"
            )
        institution_name = name.removeprefix("institution:")
        provides = tuple(
            validate_information_name_code(code) for code in section.get("provides", "").split()
        )
        if section.getboolean("external", False):
            outside.append(
                OutsideMember(
                    name=institution_name,
                    code=validate_institution_code(_value(section, "code")),
                    display_name=_value(section, "name"),
                    kind=section["kind"],
                    network_address=_value(section, "network_address"),
                    provides=provides,
                )
            )
            continue
        if "result_retention" in section:
            raise ValueError(
                f"[{name}] result_retention: query results are kept as [retention]"
                " query_results says (e.g. query_results = 7d)"
            )
        system_names = tuple(_value(section, "back_office_systems").split())
        non_disclosed = tuple(
            validate_information_name_code(code)
            for code in section.get("non_disclosed", "").split()
        )
        for code in non_disclosed:
            if code not in provides:
                raise ValueError(f"[{name}] non_disclosed names {code}, which it does not provide")
        institutions.append(
            InstitutionConfig(
                name=institution_name,
                code=validate_institution_code(_value(section, "code")),
                display_name=_value(section, "name"),
                kind=_value(section, "kind"),
                database=_database_url(_value(section, "database"), base),
                network_listen=_value(section, "network_listen"),
                network_address=_value(section, "network_address"),
                back_office_listen=_value(section, "back_office_listen"),
                back_office_address=_value(section, "back_office_address"),
                back_office_systems=system_names,
                provides=provides,
                hold_lifetime=section.getfloat("hold_lifetime", 72 * 3600.0),
                console_listen=section.get("console_listen"),
                console_address=section.get("console_address"),
                metrics_listen=section.get("metrics_listen"),
                console_idle_timeout=(
                    section.getfloat("console_idle_timeout")
                    if section.get("console_idle_timeout")
                    else None
                ),
                replica_inbox=(
                    base / section["replica_inbox"] if section.get("replica_inbox") else None
                ),
                systems=tuple(
                    _system(parser, institution_name, system, provides) for system in system_names
                ),
                processes=_processes(section),
                non_disclosed=non_disclosed,
            )
        )
    known = {
        f"back-office:{i.name}:{system}" for i in institutions for system in i.back_office_systems
    }
    for name in parser.sections():
        if name.startswith("back-office:") and name not in known:
            raise ValueError(f"[{name}] is not a back-office system of a configured institution")
    portal = _portal(parser, base)
    codes = [i.code for i in institutions] + [member.code for member in outside]
    if portal is not None:
        codes.append(portal.code)
    if len(set(codes)) != len(codes):
        raise ConfigError(f"{path}: two institutions share an institution code")
    delivery = (
        parser["delivery"] if parser.has_section("delivery") else parser[parser.default_section]
    )
    demo = parser["demo"] if parser.has_section("demo") else None
    population = None
    if parser.has_section("population"):
        section = parser["population"]
        size = _value(section, "size")
        if size not in ("small", "full"):
            raise ValueError(f"[population] size {size!r} is not small or full")
        population = PopulationConfig(size=size, seed=section.getint("seed", 20261126))
    control = None
    if parser.has_section("control"):
        section = parser["control"]
        control = ControlConfig(
            listen=_loopback_only(_value(section, "listen")),
            address=_value(section, "address"),
            token=base / section.get("token", "var/control.token"),
        )
    return Config(
        path=path,
        pki=base / _value(renkei, "pki"),
        hub_address=_value(renkei, "hub_address"),
        network=network,
        institutions=tuple(institutions),
        retry=RetryPolicy(
            initial=delivery.getfloat("retry_initial", 0.5),
            maximum=delivery.getfloat("retry_maximum", 60.0),
            lease=delivery.getfloat("lease", 30.0),
        ),
        poll_interval=delivery.getfloat("poll_interval", 1.0),
        list_refresh=delivery.getfloat("list_refresh", 300.0),
        retention_interval=delivery.getfloat("retention_interval", 60.0),
        notice_status_interval=delivery.getfloat("notice_status_interval", 60.0),
        batching=_batching(delivery),
        demo_data=base / _value(demo, "data") if demo is not None else None,
        population=population,
        control=control,
        outside_members=tuple(outside),
        jobs=_jobs(parser),
        health=_health(parser),
        alerts=_alerts(parser),
        retention=_retention(parser),
        backup=_backup(parser, base),
        portal=portal,
    )
