"""The care-insurance use cases, run end to end against a running network in a box.

Each use case picks its persons from the generated population (the same seed as the box's
``[population]``, so the persons exist there), sends what the real back office would send
through its node's back-office API and returns what came back. ``renkei use-case N`` prints
the outcome; tests/test_use_cases.py asserts it. docs/population.md lists the persons each
use case relies on.

1. Premium assessment (保険料の賦課): Meguro bulk-queries local tax information of its
   first-category insured persons who moved in this year, from the municipality where they
   lived on 1 January, for the fiscal year the premium is assessed on (照会年度).
2. A person moves from Setagaya to Meguro: Meguro queries Setagaya's care-insurance
   information (certification, 受給者基本情報 0201) for 要介護認定, as of the move (照会期間).
3. A person moves out of Meguro to Shibuya: Shibuya queries Meguro's 副本 as of the move;
   for a DV-protected person the provision is held (保留中) for Meguro's staff.
4. Premium stage check: Meguro queries the welfare office for public assistance and the
   pension-office institution for pension information, in the fiscal year being assessed.

The queries carry conditions (照会条件, middleware/conditions.py) so that only the records
the business step needs are provided, not the other years a provider keeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from adapters.care_insurance import bulk_query
from middleware.config import Config, InstitutionConfig
from middleware.deferred import deferred
from simulators.back_office import BackOfficeClient
from simulators.population import (
    FISCAL_YEAR_START,
    MUNICIPALITIES,
    TAX_BASE_DATE,
    TAX_YEAR,
    Person,
    world,
)

__all__ = [
    "CARE",
    "CARE_AFFAIR",
    "CARE_INSURANCE",
    "CERTIFICATION",
    "PENSION",
    "PREMIUM_ASSESSMENT",
    "PREMIUM_FISCAL_YEAR",
    "PREMIUM_TAX_YEAR",
    "PUBLIC_ASSISTANCE",
    "TAX",
    "USE_CASES",
    "Outcome",
    "as_of_the_move",
    "bulk_query_line",
    "move_from_setagaya",
    "move_to_shibuya",
    "mover_from_setagaya",
    "movers_in_to_meguro",
    "movers_to_shibuya",
    "population_of",
    "premium_assessment",
    "premium_stage_check",
    "stage_check_person",
]

CARE = "TM00000000000004"
TAX = "TM00000000000002"
PUBLIC_ASSISTANCE = "TM00000000900001"
PENSION = "TM00000000900002"
PREMIUM_ASSESSMENT = "JT90010000000001"  # 保険料の賦課
CERTIFICATION = "JT90010000000002"  # 要介護認定
CARE_AFFAIR = "JM90000000001000"
CARE_INSURANCE = "care-insurance"
# The premium of fiscal year N (its 所得段階) is set on the inhabitant tax of 年度 N
# (介護保険法施行令 第38条: 当該年度分の市町村民税), assessed in June of N on the income of
# N - 1 by the municipality of 1 January N. The population's TAX_YEAR is the 年度 of the fiscal
# year in course (FISCAL_YEAR_START), already assessed on its REFERENCE_DATE (November), so
# the premium assessment of this fiscal year asks for TAX_YEAR, not TAX_YEAR - 1, which the
# wards also keep and which set last year's premium.
PREMIUM_TAX_YEAR = TAX_YEAR
PREMIUM_FISCAL_YEAR = FISCAL_YEAR_START.year  # the fiscal year whose premium is assessed


@dataclass
class Outcome:
    """What one use case did: its steps in words and the statuses that came back."""

    title: str
    steps: list[str] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    result_file: bytes | None = None
    result_encoding: str = "utf-8"


def _municipality_node(config: Config, key: str) -> InstitutionConfig:
    code = MUNICIPALITIES[key].institution
    return config.institution(code)


def _of_kind(config: Config, kind: str) -> InstitutionConfig:
    for institution in config.institutions:
        if institution.kind == kind:
            return institution
    raise LookupError(f"no institution of kind {kind} in {config.path}")


def movers_in_to_meguro(persons: dict[str, list[Person]]) -> list[Person]:
    """Meguro's insured persons who moved in this year, after 1 January, from another of
    the emulated wards (their local tax is assessed where they lived on 1 January)."""
    return [
        p
        for p in persons["meguro"]
        if p.care is not None
        and p.moved_in_from in MUNICIPALITIES
        and p.moved_in_on is not None
        and p.moved_in_on > TAX_BASE_DATE
    ]


def bulk_query_line(
    person: Person,
    requester: str,
    provider: str,
    asked_at: datetime,
    fiscal_year: int | None = PREMIUM_TAX_YEAR,
) -> str:
    """One line of the 18-field bulk-query CSV (docs/bulk-query.md): ``person``'s local tax
    information from ``provider`` for premium assessment, of ``fiscal_year`` (照会条件区分 1,
    照会年度区分), or of every year the provider keeps with None (no condition)."""
    values = [""] * len(bulk_query.FIELDS)
    values[bulk_query.NUMBER_SYSTEM] = bulk_query.INTEGRATED_NUMBER_SYSTEM
    values[bulk_query.ADDRESS_NUMBER] = person.address_number
    values[bulk_query.INTEGRATED_ADDRESS_NUMBER] = person.integrated_address_number
    values[bulk_query.REQUESTED_AT] = (
        asked_at.strftime("%Y%m%d%H%M%S") + f"{asked_at.microsecond // 1000:03d}"
    )
    values[bulk_query.DEPARTMENT] = "KAIGO"
    values[bulk_query.USER_ID] = "usecase1"
    values[bulk_query.REQUESTER] = requester
    values[bulk_query.NON_DISCLOSURE] = "0"
    values[bulk_query.AFFAIR] = CARE_AFFAIR
    values[bulk_query.PROCEDURE] = PREMIUM_ASSESSMENT
    values[bulk_query.PROVIDER] = provider
    values[bulk_query.INFORMATION_NAME] = TAX
    if fiscal_year is not None:
        values[bulk_query.CONDITION_KIND] = "1"  # by fiscal year
        values[bulk_query.FISCAL_YEAR] = f"{fiscal_year:04d}"
    return ",".join(values)


@deferred
async def premium_assessment(
    reactor: Any, config: Config, persons: dict[str, list[Person]], timeout: float = 120
) -> Outcome:
    """Use case 1: the bulk query of movers-in's local tax, with its result file."""
    meguro = _municipality_node(config, "meguro")
    outcome = Outcome("保険料の賦課: 転入者の地方税関係情報を一括照会")
    asked_at = datetime(2026, 11, 26, 9, 0, 0)
    movers = movers_in_to_meguro(persons)
    lines = [
        bulk_query_line(
            p,
            meguro.code,
            MUNICIPALITIES[str(p.moved_in_from)].institution,
            asked_at,
        )
        for p in movers
    ]
    outcome.steps.append(f"{len(lines)} movers-in from Setagaya and Shibuya, one line each")
    client = BackOfficeClient(reactor, config, meguro, CARE_INSURANCE)
    try:
        body = ("\r\n".join(lines) + "\r\n").encode("cp932")
        answer = await client.send_file("/bulk-queries", body, "text/csv")
        accepted = json.loads(answer)
        bulk_id = accepted["bulk_query_id"]
        outcome.steps.append(f"bulk query {bulk_id} accepted ({accepted['lines']} lines)")
        deadline = reactor.seconds() + timeout
        while True:
            progress = await client.request("GET", f"/bulk-queries/{bulk_id}")
            if progress["state"] == "ended":
                break
            if reactor.seconds() > deadline:
                raise TimeoutError(f"bulk query {bulk_id} still running after {timeout}s")
            await deferLater(reactor, 0.2, lambda: None)
        outcome.statuses.append(progress)
        outcome.steps.append(f"ended: {progress['by_state']}")
        result = await client.send("GET", f"/bulk-queries/{bulk_id}/result", None)
        outcome.result_file = result.body
        if "shift_jis" in result.content_type:
            outcome.result_encoding = "cp932"
    finally:
        await client.close()
    return outcome


async def _ask(
    client: BackOfficeClient,
    person_number: str,
    procedure: str,
    information_name: str,
    provider: InstitutionConfig,
    conditions: dict[str, Any],
    outcome: Outcome,
    timeout: float,
) -> dict[str, Any]:
    submitted = await client.submit_query(
        integrated_address_number=person_number,
        procedure=procedure,
        information_name=information_name,
        provider=provider.code,
        conditions=conditions,
    )
    status = await client.wait_for_result(submitted["query_id"], timeout=timeout)
    outcome.statuses.append(status)
    outcome.steps.append(
        f"{information_name} from {provider.display_name}: {status['state']}"
        + (f" ({status['error']['code']})" if status["error"] else "")
    )
    return status


def mover_from_setagaya(persons: dict[str, list[Person]]) -> Person:
    """An insured person of Meguro who moved in from Setagaya and was insured there too
    (Setagaya keeps their 副本), certified there if any such person is."""
    insured_there = {
        p.individual_number: p
        for p in persons["setagaya"]
        if p.moved_out_to == "meguro" and p.care is not None
    }
    movers = [
        p for p in persons["meguro"] if p.care is not None and p.individual_number in insured_there
    ]

    def not_certified(person: Person) -> bool:
        care = insured_there[person.individual_number].care
        return care is None or care.care_level is None

    movers.sort(key=not_certified)
    return movers[0]


def as_of_the_move(person: Person) -> dict[str, Any]:
    """The conditions of a query about a mover's care insurance at their former insurer:
    what was valid from the day of the move on (the day eligibility changed insurer), that
    is the insured record that ended that day and the certification carried over (the one
    valid now), not the former insurer's earlier certifications."""
    assert person.moved_in_on is not None, "not a mover in"
    return {"period_start": person.moved_in_on.isoformat()}


@deferred
async def move_from_setagaya(
    reactor: Any, config: Config, persons: dict[str, list[Person]], timeout: float = 30
) -> Outcome:
    """Use case 2: Meguro asks Setagaya for a mover's care-insurance information."""
    person = mover_from_setagaya(persons)
    outcome = Outcome("世田谷区から目黒区への転入: 要介護認定情報の照会")
    client = BackOfficeClient(reactor, config, _municipality_node(config, "meguro"), CARE_INSURANCE)
    try:
        await _ask(
            client,
            person.integrated_address_number,
            CERTIFICATION,
            CARE,
            _municipality_node(config, "setagaya"),
            as_of_the_move(person),
            outcome,
            timeout,
        )
    finally:
        await client.close()
    return outcome


def movers_to_shibuya(persons: dict[str, list[Person]]) -> tuple[Person, Person]:
    """Two insured persons who moved from Meguro to Shibuya, as Shibuya knows them: one
    without and one with DV protection."""
    movers = [p for p in persons["shibuya"] if p.care is not None and p.moved_in_from == "meguro"]
    protected = {p.individual_number for p in persons["meguro"] if p.dv_protected}
    plain = next(p for p in movers if p.individual_number not in protected)
    shielded = next(p for p in movers if p.individual_number in protected)
    return plain, shielded


@deferred
async def move_to_shibuya(
    reactor: Any, config: Config, persons: dict[str, list[Person]], timeout: float = 30
) -> Outcome:
    """Use case 3: Shibuya asks Meguro's 副本 about two movers; the DV-protected one's
    provision is held by Meguro."""
    plain, shielded = movers_to_shibuya(persons)
    outcome = Outcome("目黒区から渋谷区への転出: 渋谷区が目黒区の副本を照会")
    meguro = _municipality_node(config, "meguro")
    client = BackOfficeClient(
        reactor, config, _municipality_node(config, "shibuya"), CARE_INSURANCE
    )
    try:
        for person in (plain, shielded):
            submitted = await client.submit_query(
                integrated_address_number=person.integrated_address_number,
                procedure=CERTIFICATION,
                information_name=CARE,
                provider=meguro.code,
                conditions=as_of_the_move(person),
            )
            deadline = reactor.seconds() + timeout
            while True:
                status = await client.query_status(submitted["query_id"], wait=1)
                if status["state"] in ("provided", "no_data", "refused", "error", "held"):
                    break
                if reactor.seconds() > deadline:
                    raise TimeoutError(f"query {submitted['query_id']} still {status['state']}")
            outcome.statuses.append(status)
            outcome.steps.append(f"{CARE} from {meguro.display_name}: {status['state']}")
    finally:
        await client.close()
    return outcome


def stage_check_person(persons: dict[str, list[Person]]) -> Person:
    """An insured resident of Meguro who receives public assistance and a pension."""
    return next(
        p
        for p in persons["meguro"]
        if p.care is not None and p.public_assistance and p.pension and p.moved_out_to is None
    )


@deferred
async def premium_stage_check(
    reactor: Any, config: Config, persons: dict[str, list[Person]], timeout: float = 30
) -> Outcome:
    """Use case 4: Meguro asks the welfare office and the pension-office institution."""
    person = stage_check_person(persons)
    outcome = Outcome("保険料段階の判定: 生活保護と年金の情報照会")
    client = BackOfficeClient(reactor, config, _municipality_node(config, "meguro"), CARE_INSURANCE)
    try:
        for information_name, kind in ((PUBLIC_ASSISTANCE, "welfare_office"), (PENSION, "pension")):
            await _ask(
                client,
                person.integrated_address_number,
                PREMIUM_ASSESSMENT,
                information_name,
                _of_kind(config, kind),
                # the assistance and pension in the fiscal year whose premium is assessed
                {"fiscal_year": PREMIUM_FISCAL_YEAR},
                outcome,
                timeout,
            )
    finally:
        await client.close()
    return outcome


USE_CASES: dict[int, Callable[..., Deferred[Outcome]]] = {
    1: premium_assessment,
    2: move_from_setagaya,
    3: move_to_shibuya,
    4: premium_stage_check,
}


def population_of(config: Config) -> dict[str, list[Person]]:
    """The population the box loaded (its ``[population]`` size and seed)."""
    if config.population is None:
        raise LookupError(f"{config.path} has no [population] section")
    return world(config.population.size, config.population.seed)
