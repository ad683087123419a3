"""`sink.model.previous_anchors` (VIEWS.md §9): each connection knows the anchor of the same participant's
previous connection in the room under the same customer and role class, whatever order it is given in."""

from __future__ import annotations

import random

import pytest

from sink.model import Connection, Dims, ParticipantKey, previous_anchors


def conn(ident: str, participant: str, at: int, customer: str | None = "c-acme", cls: str | None = None) -> Connection:
    return Connection(
        connection_id=ident,
        participant_id=participant,
        anchor_at=at,
        session_key=None,
        room_session_id=None,
        session_via="none",
        joined_at=at,
        left_at=None,
        ended_at=None,
        end_source="open",
        duration_ms=None,
        minutes=None,
        sources="webhook",
        dims_version=1,
        dims=Dims(customer_id=customer, role_class=cls),
    )


CASES: list[tuple[str, list[Connection], dict[ParticipantKey, int], dict[str, int | None]]] = [
    ("one connection is its participant's first", [conn("a", "p", 10)], {}, {"a": None}),
    (
        "a rejoin points at the connection before it",
        [conn("a", "p", 10), conn("b", "p", 50), conn("c", "p", 90)],
        {},
        {"a": None, "b": 10, "c": 50},
    ),
    ("two participants are followed apart", [conn("a", "p", 10), conn("b", "q", 20)], {}, {"a": None, "b": None}),
    (
        "another customer starts again (a replay moved one connection)",
        [conn("a", "p", 10, customer="c-acme"), conn("b", "p", 20, customer="c-globex"), conn("c", "p", 30)],
        {},
        {"a": None, "b": None, "c": 10},
    ),
    (
        "an unresolved customer is a customer of its own",
        [conn("a", "p", 10, customer=None), conn("b", "p", 20, customer=None), conn("c", "p", 30)],
        {},
        {"a": None, "b": 10, "c": None},
    ),
    (
        "a recorder is not the human with the same participant id",
        [conn("a", "p", 10), conn("b", "p", 20, cls="recorder"), conn("c", "p", 30, cls="human")],
        {},
        {"a": None, "b": None, "c": 10},
    ),
    (
        "the stored part before a truncated window seeds the first connection only",
        [conn("a", "p", 100), conn("b", "p", 150)],
        {("p", "c-acme", "human"): 40},
        {"a": 40, "b": 100},
    ),
    (
        "a seed of another customer does not count",
        [conn("a", "p", 100)],
        {("p", "c-globex", "human"): 40},
        {"a": None},
    ),
    (
        "equal anchors are ordered by connection id",
        [conn("b", "p", 10), conn("a", "p", 10)],
        {},
        {"a": None, "b": 10},
    ),
]


@pytest.mark.parametrize(("name", "connections", "earlier", "expected"), CASES, ids=[c[0] for c in CASES])
def test_previous_anchors(
    name: str, connections: list[Connection], earlier: dict[ParticipantKey, int], expected: dict[str, int | None]
) -> None:
    assert previous_anchors(connections, earlier) == expected
    rng = random.Random(name)
    for _ in range(3):  # any order gives the same answer
        shuffled = connections[:]
        rng.shuffle(shuffled)
        assert previous_anchors(shuffled, earlier) == expected
