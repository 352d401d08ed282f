"""Test helper: a real network in a box on loopback, configured like twistd.conf.

Every box gets fresh databases and free ports; the PKI is made once per test session.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection

from crypto.pki import InstitutionEntry, init_pki
from middleware.config import Config, load_config
from middleware.persons import enrol, person_key
from renkei.sandbox import free_port, sandbox_config, sandbox_pki

REPOSITORY = Path(__file__).resolve().parent.parent
MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
SHIBUYA = "1131130000000000"
PORTAL = "9000000000000001"  # マイナポータル (emulated code, as in twistd.conf)
CARE_INSURANCE = "care-insurance"
LOCAL_TAX = "local-tax"
CARE_AFFAIR = "JM90000000001000"  # 介護保険 affairs
TAX_AFFAIR = "JM90000000002000"  # 地方税 affairs
PREMIUM_ASSESSMENT = "JT90010000000001"  # 保険料の賦課 (care insurance)
CARE_CERTIFICATION = "JT90010000000002"  # 要介護認定 (care insurance)
INHABITANT_TAX = "JT90020000000001"  # 住民税の賦課 (local tax)
CARE_INFORMATION = "TM00000000000004"
TAX_INFORMATION = "TM00000000000002"
# Demo persons (simulators/data/demo.json)
HANAKO_MEGURO = "000000000010001"
HANAKO_INDIVIDUAL_NUMBER = "123456789018"
ICHIRO_MEGURO = "000000000010003"  # registered in Meguro only
DEMO_INDIVIDUAL_NUMBERS = ("123456789018", "234567890121", "345678901234")


def make_network_pki(directory: Path) -> Path:
    """The PKI of the test network (hub, Meguro, Setagaya and their back offices: Meguro's
    care-insurance system, Setagaya's local-tax and care-insurance systems)."""
    init_pki(
        directory,
        [
            InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
            InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
        ],
    )
    return directory


def make_portal_pki(directory: Path) -> Path:
    """The PKI of a test network with マイナポータル: the hub, Meguro, Setagaya and Shibuya
    (each with its care-insurance system, Setagaya and Shibuya with local tax too) and the
    portal."""
    init_pki(
        directory,
        [
            InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
            InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
            InstitutionEntry(SHIBUYA, (LOCAL_TAX, CARE_INSURANCE)),
        ],
        portal=PORTAL,
    )
    return directory


def portal_sections(directory: Path, extra: str = "") -> str:
    """The sections `write_config` adds for a network with マイナポータル: Shibuya (which
    queries Meguro about persons moving in) and the portal, whose demo residents are the
    demo persons; ``extra``: more keys of Shibuya's section (e.g. ``non_disclosed``)."""
    ports = {name: free_port() for name in ("bn", "bb", "pn", "pw")}
    return f"""
[institution:shibuya]
code = {SHIBUYA}
name = 渋谷区
kind = municipality
database = sqlite:///{directory / "shibuya.sqlite"}
network_listen = tcp:port={ports["bn"]}:interface=127.0.0.1
network_address = https://127.0.0.1:{ports["bn"]}
back_office_listen = tcp:port={ports["bb"]}:interface=127.0.0.1
back_office_address = https://127.0.0.1:{ports["bb"]}
back_office_systems = {LOCAL_TAX} {CARE_INSURANCE}
provides = {TAX_INFORMATION} {CARE_INFORMATION}
{extra}

[back-office:shibuya:{LOCAL_TAX}]
affairs = {TAX_AFFAIR}
information_names = {TAX_INFORMATION}

[back-office:shibuya:{CARE_INSURANCE}]
affairs = {CARE_AFFAIR}
information_names = {CARE_INFORMATION}

[portal]
code = {PORTAL}
name = マイナポータル
database = sqlite:///{directory / "portal.sqlite"}
network_listen = tcp:port={ports["pn"]}:interface=127.0.0.1
network_address = https://127.0.0.1:{ports["pn"]}
web_listen = tcp:port={ports["pw"]}:interface=127.0.0.1
web_address = https://127.0.0.1:{ports["pw"]}
residents = {REPOSITORY / "simulators/data/demo.json"}
"""


def host_and_port_of(address: str) -> tuple[str, int]:
    """The (host, port) of an ``https://host:port`` address of a configuration."""
    host, port = address.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def write_config(
    directory: Path,
    pki: Path,
    *,
    database: dict[str, str] | None = None,
    permit_validity: float = 600,
    result_retention: float = 3600,
    retention: str = "",
    demo: bool = True,
    console_idle_timeout: float | None = None,
    delegations: tuple[tuple[str, str], ...] = ((MEGURO, SETAGAYA),),
    sections: str = "",
    notice_status_interval: float = 60,
    delivery: str = "",
) -> Config:
    """Write a configuration for a box in ``directory`` and load it. ``delegations``: who
    may act for whom (委任), as (delegator, delegate): by default Setagaya for Meguro;
    ``retention``: more keys of ``[retention]`` (whose ``query_results`` is
    ``result_retention`` seconds), as INI lines; ``sections``: more sections, as INI text
    ([health], [alerts], [backup], ...); ``delivery``: more keys of ``[delivery]``, as INI
    lines."""
    database = database or {}
    names = ("mm", "hub", "mn", "mb", "mc", "sn", "sb", "sc", "ctl", "hh")
    ports = {name: free_port() for name in names}
    delegations_file = directory / "delegations.csv"
    delegations_file.write_text(
        "delegator,delegate,note\n"
        + "".join(f"{delegator},{delegate},test\n" for delegator, delegate in delegations),
        encoding="utf-8",
    )
    idle = f"console_idle_timeout = {console_idle_timeout}\n" if console_idle_timeout else ""

    def url(name: str) -> str:
        return database.get(name, f"sqlite:///{directory / (name + '.sqlite')}")

    text = f"""
[renkei]
pki = {pki}
hub_address = https://127.0.0.1:{ports["hub"]}

[network]
database = {url("hub")}
listen = tcp:port={ports["hub"]}:interface=127.0.0.1
address = https://127.0.0.1:{ports["hub"]}
permitted_list = {REPOSITORY / "simulators/network/data/permitted_list.csv"}
delegations = {delegations_file}
list_validity = 3600
permit_validity = {permit_validity}
health_listen = tcp:port={ports["hh"]}:interface=127.0.0.1

[institution:meguro]
code = {MEGURO}
name = 目黒区
kind = municipality
database = {url("meguro")}
network_listen = tcp:port={ports["mn"]}:interface=127.0.0.1
network_address = https://127.0.0.1:{ports["mn"]}
back_office_listen = tcp:port={ports["mb"]}:interface=127.0.0.1
back_office_address = https://127.0.0.1:{ports["mb"]}
back_office_systems = {CARE_INSURANCE}
console_listen = tcp:port={ports["mc"]}:interface=127.0.0.1
console_address = https://127.0.0.1:{ports["mc"]}
metrics_listen = tcp:port={ports["mm"]}:interface=127.0.0.1
{idle}provides = {CARE_INFORMATION}

[back-office:meguro:{CARE_INSURANCE}]
affairs = {CARE_AFFAIR}
information_names = {CARE_INFORMATION}

[institution:setagaya]
code = {SETAGAYA}
name = 世田谷区
kind = municipality
database = {url("setagaya")}
network_listen = tcp:port={ports["sn"]}:interface=127.0.0.1
network_address = https://127.0.0.1:{ports["sn"]}
back_office_listen = tcp:port={ports["sb"]}:interface=127.0.0.1
back_office_address = https://127.0.0.1:{ports["sb"]}
back_office_systems = {LOCAL_TAX} {CARE_INSURANCE}
console_listen = tcp:port={ports["sc"]}:interface=127.0.0.1
console_address = https://127.0.0.1:{ports["sc"]}
provides = {TAX_INFORMATION} {CARE_INFORMATION}

[back-office:setagaya:{LOCAL_TAX}]
affairs = {TAX_AFFAIR}
information_names = {TAX_INFORMATION}

[back-office:setagaya:{CARE_INSURANCE}]
affairs = {CARE_AFFAIR}
information_names = {CARE_INFORMATION}

[delivery]
retry_initial = 0.1
retry_maximum = 0.5
lease = 2
poll_interval = 0.2
list_refresh = 300
retention_interval = 300
notice_status_interval = {notice_status_interval}
{delivery}

[retention]
query_results = {result_retention}
{retention}
[control]
listen = tcp:port={ports["ctl"]}:interface=127.0.0.1
address = http://127.0.0.1:{ports["ctl"]}
token = {directory / "control.token"}
"""
    if demo:
        text += f"\n[demo]\ndata = {REPOSITORY / 'simulators/data/demo.json'}\n"
    text += sections
    path = directory / "renkei.conf"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def write_network_config(directory: Path, population: str = "small") -> Config:
    """The repository's own twistd.conf (every institution of the network in a box) moved
    into ``directory`` (renkei/sandbox.py), no demo persons, the generated ``population``
    loaded at start. Run ``init_network_pki`` on the result before starting it."""
    return sandbox_config(directory, population=population, demo=False)


def init_network_pki(config: Config) -> None:
    """The PKI of every institution of ``config`` and its back-office systems."""
    sandbox_pki(config)


def register(connection: Connection, number: str, now: datetime) -> None:
    """Register a person in a node database before the 符号 is acquired (through the
    integrated-address function, with a person key made from the number itself)."""
    enrol(connection, person_key(bytes(32), number), number, now)
