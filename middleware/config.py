"""The one configuration loader: the INI file given to ``twistd renkei -c``.

A file describes a whole network in a box: a ``[network]`` section for the hub (omit it to
run institution nodes against a hub elsewhere), one ``[institution:NAME]`` section per
intermediate server with one ``[back-office:NAME:SYSTEM]`` section per back-office system
it serves (what that system may do), ``[delivery]`` for the outbox, and optionally
``[jobs]`` (the periodic jobs), ``[health]`` and ``[alerts]`` (what the health looks at and
where its changes are posted), ``[demo]``, ``[population]`` and ``[control]``. Relative
paths are read relative to the file. See docs/operations.md for every key.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from codes import errors
from codes.errors import RenkeiError
from codes.institution import INSTITUTION_KINDS, validate_institution_code
from codes.typed import validate_affair_code, validate_information_name_code
from middleware.outbox import RetryPolicy

__all__ = [
    "LOOPBACK",
    "AlertsConfig",
    "BackOfficeSystem",
    "Config",
    "ConfigError",
    "ControlConfig",
    "HealthConfig",
    "InstitutionConfig",
    "JobsConfig",
    "NetworkConfig",
    "OutsideMember",
    "PopulationConfig",
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
    result_retention: float
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
        system_names = tuple(_value(section, "back_office_systems").split())
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
                result_retention=section.getfloat("result_retention", 7 * 86400.0),
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
            )
        )
    known = {
        f"back-office:{i.name}:{system}" for i in institutions for system in i.back_office_systems
    }
    for name in parser.sections():
        if name.startswith("back-office:") and name not in known:
            raise ValueError(f"[{name}] is not a back-office system of a configured institution")
    codes = [i.code for i in institutions] + [member.code for member in outside]
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
        demo_data=base / _value(demo, "data") if demo is not None else None,
        population=population,
        control=control,
        outside_members=tuple(outside),
        jobs=_jobs(parser),
        health=_health(parser),
        alerts=_alerts(parser),
    )
