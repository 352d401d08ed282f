"""The integrated-address function over the back-office API: individual number in,
integrated address number out, 符号 acquired in the background, no individual number kept."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import Connection, select
from twisted.internet import reactor
from twisted.internet.task import deferLater

from middleware.tables import person
from simulators.back_office import BackOfficeError
from simulators.network import jukinet

NEW_RESIDENT = "456789012346"


async def _resident(box: Any, individual_number: str) -> None:
    await box.hub.database.run(jukinet.register_resident, individual_number)


def _person_rows(box: Any) -> list[Any]:
    def read(connection: Connection) -> list[Any]:
        return list(connection.execute(select(person)))

    return box.nodes["meguro"].database.run_blocking(read)


@pytest_twisted.ensureDeferred
async def test_registration_allocates_a_number_and_acquires_the_fugo(
    box: Any, meguro_care: Any
) -> None:
    """A person registered with only an individual number gets a new 15-digit integrated
    address number and, once the background acquisition ended, the state acquired."""
    await _resident(box, NEW_RESIDENT)
    answer = await meguro_care.register_person(None, NEW_RESIDENT)
    number = answer["integrated_address_number"]
    assert len(number) == 15 and number.isdigit()
    assert answer["fugo_state"] == "acquired"
    again = await meguro_care.register_person(None, NEW_RESIDENT)
    assert again["integrated_address_number"] == number
    state = await meguro_care.person_state(number)
    assert state["fugo_state"] == "acquired" and "fugo" not in state


@pytest_twisted.ensureDeferred
async def test_registration_without_waiting_answers_pending_then_acquires(
    box: Any, meguro_care: Any
) -> None:
    """Without ``wait`` the answer comes before the 符号 and says pending; the state later
    reads acquired."""
    await _resident(box, NEW_RESIDENT)
    answer = await meguro_care.register_person(None, NEW_RESIDENT, wait=0)
    assert answer["fugo_state"] in ("pending", "acquired")
    number = answer["integrated_address_number"]
    for _ in range(100):
        state = await meguro_care.person_state(number)
        if state["fugo_state"] == "acquired":
            break
        await deferLater(reactor, 0.05, lambda: None)
    assert state["fugo_state"] == "acquired"


@pytest_twisted.ensureDeferred
async def test_the_node_never_stores_the_individual_number(box: Any, meguro_care: Any) -> None:
    """After registrations, no column of the person table holds an individual number."""
    await _resident(box, NEW_RESIDENT)
    await meguro_care.register_person(None, NEW_RESIDENT)
    for row in _person_rows(box):
        assert NEW_RESIDENT not in "".join(str(value) for value in row)


@pytest_twisted.ensureDeferred
async def test_a_proposed_number_of_another_person_is_a_conflict(
    box: Any, meguro_care: Any
) -> None:
    """Proposing the integrated address number of an already registered person for someone
    else is refused with PersonConflict."""
    await _resident(box, NEW_RESIDENT)
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.register_person("000000000010001", NEW_RESIDENT)
    assert refused.value.code == "PersonConflict"


@pytest_twisted.ensureDeferred
async def test_state_of_an_unknown_person_is_refused(box: Any, meguro_care: Any) -> None:
    """Asking the state of a number nobody has is UnknownPerson."""
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.person_state("000000000099999")
    assert refused.value.code == "UnknownPerson"
