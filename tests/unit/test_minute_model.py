"""The pure minute model (`sink.model`) on every case of `tests/minute_cases.py`, in order, reversed and
shuffled three times over: the same connections each time."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest

from enrich.dimensions import Customer, DimensionTable, User
from enrich.enricher import enrich
from pipeline import contract
from sink.model import Dims, Event, RoomModel, derive
from tests import minute_cases
from tests.minute_cases import CASES, Case


def table() -> DimensionTable:
    dims = DimensionTable()
    for cid, (name, prefixes) in minute_cases.CUSTOMERS.items():
        dims.put_customer(Customer(cid, name, tuple(prefixes)))
    for ext, (uid, name, cid) in minute_cases.USERS.items():
        dims.users[ext] = User(ext, uid, cid, name, None)
    return dims


def model_events(case: Case) -> list[Event]:
    dims = table()
    out = []
    for doc in case.events:
        headers = {contract.HEADER_EVENT_SOURCE: "insights"} if doc["id"] in case.synthesized else {}
        e: Any = enrich(orjson.dumps(doc), headers, dims, now_ms=0)
        out.append(
            Event(
                event_id=e["event_id"],
                event_type=e["event_type"],
                at=e["created_at_ms"],
                participant_id=e["participant_id"],
                room_session_id=e["room_session_id"],
                num_clients=e["num_clients"],
                source=e["source"],
                version=e["enrichment_version"],
                dims=Dims(
                    customer_id=e["customer_id"],
                    external_id=e["external_id"],
                    role_class=e["role_class"],
                    role_name=e["role_name"],
                ),
            )
        )
    return out


def by_room(events: list[Event], case: Case) -> dict[str, list[Event]]:
    rooms: dict[str, list[Event]] = {}
    for doc, e in zip(case.events, events, strict=True):
        rooms.setdefault(doc["data"]["roomName"], []).append(e)
    return rooms


def observed(models: list[RoomModel]) -> tuple[dict[tuple[str, int | None], tuple[int | None, str]], Counter[Any]]:
    connections = {}
    customers: Counter[Any] = Counter()
    for m in models:
        for c in m.connections:
            connections[(c.participant_id, c.joined_at)] = (c.minutes, c.end_source)
            if c.dims.role_class == "human" and c.minutes:
                customers[c.dims.customer_id] += c.minutes
    return connections, customers


def expected(case: Case) -> dict[tuple[str, int | None], tuple[int | None, str]]:
    out = {}
    for (pid, when), value in case.connections.items():
        ms = None if when is None else int(minute_cases.at(when).timestamp() * 1000)
        out[(pid, ms)] = value
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("delivery", ["in order", "reversed", "three times shuffled"])
def test_each_case_gives_the_expected_minutes(case: Case, delivery: str) -> None:
    events = model_events(case)
    if delivery == "reversed":
        events = events[::-1]
    elif delivery == "three times shuffled":
        events = events * 3
        random.Random(7).shuffle(events)
    rooms: dict[str, list[Event]] = {}
    for e in events:
        room = next(d["data"]["roomName"] for d in case.events if d["id"] == e.event_id)
        rooms.setdefault(room, []).append(e)
    connections, customers = observed([derive(evs) for evs in rooms.values()])
    assert connections == expected(case)
    assert {k: v for k, v in customers.items() if v} == {k: v for k, v in case.customers.items() if v}
