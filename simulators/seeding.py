"""Loading a generated population into a running network, the way real back offices would.

The resident registry (住基ネット simulator) learns every individual number directly (it is
the hub's own database); then each institution's back office registers its persons through
the integrated-address function (``POST /persons``, the 符号 acquired by the node) and its
副本 through 副本 files (``POST /replica-files``), as docs/population.md describes. Used by
the network in a box (``[population]`` in twistd.conf) and by ``renkei populate``.

Which persons each institution holds (``holdings``):

- a municipality's node: the persons its care-insurance and local-tax back offices keep
  副本 about (insured persons, movers out included; residents on 1 January);
- a welfare office (``welfare_office``, code ``2`` + municipality code + serial): the
  recipients of public assistance of its municipality;
- a pension-office institution (``pension``): every pensioner of every municipality.

Municipalities' nodes keep the generated integrated address numbers; the welfare and pension
nodes let the integrated-address function allocate theirs (their persons come from several
municipalities whose numbers overlap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import DeferredSemaphore, gatherResults

from adapters.care_insurance.replica_file import build_replica_file, refused_codes
from codes.institution import municipality_code_of_institution
from middleware.config import Config, InstitutionConfig
from middleware.deferred import deferred
from middleware.replica import ReplicaRecord
from simulators.back_office import BackOfficeClient
from simulators.population import MUNICIPALITIES, Person, replica_records

__all__ = [
    "CONCURRENT_REGISTRATIONS",
    "ENTRIES_PER_FILE",
    "REPLICA_OF_SYSTEM",
    "Holding",
    "holdings",
    "keeps_generated_numbers",
    "register_holdings",
    "residents",
]

# The back-office systems whose 副本 a node keeps, by system name.
REPLICA_OF_SYSTEM = {
    "care-insurance": "care-insurance",
    "local-tax": "local-tax",
    "public-assistance": "welfare",
    "pension": "pension",
}
CONCURRENT_REGISTRATIONS = 32
ENTRIES_PER_FILE = 5_000


@dataclass(frozen=True)
class Holding:
    """One person an institution registers, with the 副本 records it keeps about them."""

    person: Person
    records: tuple[ReplicaRecord, ...]


def holdings(institution: InstitutionConfig, world: dict[str, list[Person]]) -> list[Holding]:
    """The persons ``institution`` registers and its 副本 about them."""
    persons = _persons_of(institution, world)
    kinds = [
        REPLICA_OF_SYSTEM[s] for s in institution.back_office_systems if s in REPLICA_OF_SYSTEM
    ]
    held = []
    for person in persons:
        records = tuple(
            record
            for kind in kinds
            for record in replica_records(person, kind)
            if record.information_name in institution.provides
        )
        if records:
            held.append(Holding(person, records))
    return held


def _persons_of(institution: InstitutionConfig, world: dict[str, list[Person]]) -> list[Person]:
    if institution.kind == "municipality":
        return [
            person
            for key, municipality in MUNICIPALITIES.items()
            if municipality.institution == institution.code
            for person in world.get(key, [])
        ]
    if institution.kind == "welfare_office":
        code = institution.code[1:7]
        return [
            person
            for key, municipality in MUNICIPALITIES.items()
            if municipality.code == code
            for person in world.get(key, [])
        ]
    if institution.kind == "pension":
        seen: set[str] = set()
        everyone = []
        for persons in world.values():
            for person in persons:
                if person.individual_number not in seen:
                    seen.add(person.individual_number)
                    everyone.append(person)
        return everyone
    return []


def keeps_generated_numbers(institution: InstitutionConfig) -> bool:
    """Whether a node keeps the population's integrated address numbers (municipalities)."""
    return municipality_code_of_institution(institution.code) is not None


@deferred
async def register_holdings(
    reactor: Any,
    config: Config,
    institution: InstitutionConfig,
    held: Sequence[Holding],
    progress: Callable[[str, int], None] | None = None,
) -> int:
    """Register ``held`` at the node of ``institution``: persons first through its first
    back-office system (``CONCURRENT_REGISTRATIONS`` at a time, each waiting for its 符号),
    then each 副本 record through the system that keeps its information name, in files of
    ``ENTRIES_PER_FILE`` entries. Fires with the number of records stored; a refused entry
    other than an existing record id raises RuntimeError, a refused registration
    BackOfficeError."""
    clients = {
        system.name: BackOfficeClient(reactor, config, institution, system.name)
        for system in institution.systems
    }
    try:
        stored = await _register(clients, institution, held, progress)
    finally:
        await gatherResults([client.close() for client in clients.values()])
    return stored


async def _register(
    clients: dict[str, BackOfficeClient],
    institution: InstitutionConfig,
    held: Sequence[Holding],
    progress: Callable[[str, int], None] | None,
) -> int:
    keep = keeps_generated_numbers(institution)
    limit = DeferredSemaphore(CONCURRENT_REGISTRATIONS)
    numbers: dict[str, str] = {}
    persons_client = clients[institution.back_office_systems[0]]

    @deferred
    async def register(holding: Holding) -> None:
        proposed = holding.person.integrated_address_number if keep else None
        # A municipality's back offices know the person by its 宛名番号 too (番号体系 02).
        address_number = holding.person.address_number if keep else None
        answer = await persons_client.register_person(
            proposed, holding.person.individual_number, address_number=address_number
        )
        numbers[holding.person.individual_number] = answer["integrated_address_number"]
        if progress is not None:
            progress("persons", 1)

    await gatherResults([limit.run(register, holding) for holding in held], consumeErrors=True)
    keeper = {
        name: system.name for system in institution.systems for name in system.information_names
    }
    by_system: dict[str, list[ReplicaRecord]] = {}
    for holding in held:
        for record in holding.records:
            by_system.setdefault(keeper[record.information_name], []).append(
                replace(record, integrated_address_number=numbers[holding.person.individual_number])
            )
    stored = 0
    for system, records in by_system.items():
        for start in range(0, len(records), ENTRIES_PER_FILE):
            chunk = records[start : start + ENTRIES_PER_FILE]
            reception = f"{institution.name}-{system}-{start // ENTRIES_PER_FILE:06d}"
            document = build_replica_file(chunk, reception[:32], source_system=system)
            result = await clients[system].send_file("/replica-files", document, "application/xml")
            stored += _count_stored(result, len(chunk))
            if progress is not None:
                progress("records", len(chunk))
    return stored


def _count_stored(result: bytes, entries: int) -> int:
    codes = refused_codes(result)
    unexpected = [code for code in codes if code != "RecordIdExists"]
    if unexpected:
        raise RuntimeError(f"副本 entries refused: {sorted(set(unexpected))}")
    return entries - len(codes)


def residents(world: dict[str, list[Person]]) -> list[str]:
    """Every individual number of the world, once (for the resident registry)."""
    return sorted({person.individual_number for persons in world.values() for person in persons})
