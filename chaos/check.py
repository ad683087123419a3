"""The checker: compares what ClickHouse counts with what the pipeline acknowledged.

- `lost`: acknowledged event ids missing from the store.
- `duplicated`: event ids stored more than once after deduplication, connections that appear more than
  once in the `connections` view, and connections whose minutes exceed what their acknowledged join and
  leave imply (a repeat that inflated an aggregate).
The same function runs on the raw delivered records (dedup switched off) as a negative control: it must
then report duplicates, which proves the check can fail.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Observed:
    """What a store (or the raw stream, for the control) counts."""

    event_counts: Counter[str] = field(default_factory=Counter)
    connection_rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    minutes: dict[tuple[str, str], int] = field(default_factory=dict)


def verdict(acked: set[str], observed: Observed, expected_minutes: dict[tuple[str, str], int]) -> dict[str, Any]:
    """Lost and duplicated counts, with a breakdown of where duplicates were seen."""
    lost = len(acked - set(observed.event_counts))
    repeated_ids = sum(1 for n in observed.event_counts.values() if n > 1)
    repeated_connections = sum(1 for n in observed.connection_rows.values() if n > 1)
    inflated = sum(1 for key, m in expected_minutes.items() if observed.minutes.get(key, 0) > m)
    short = sum(1 for key, m in expected_minutes.items() if key in observed.minutes and observed.minutes[key] < m)
    return {
        "acked": len(acked),
        "lost": lost,
        "duplicated": repeated_ids + repeated_connections + inflated,
        "duplicate_breakdown": {"event_ids": repeated_ids, "connections": repeated_connections, "minutes": inflated},
        "connections_checked": len(expected_minutes),
        "connections_undercounted": short,
    }


def from_store(client: Any, database: str) -> Observed:
    """What ClickHouse counts, through the deduplicating table and the BI view analysts use."""
    observed = Observed()
    for event_id, n in client.query(
        f"SELECT event_id, count() FROM {database}.events FINAL GROUP BY event_id"
    ).result_rows:
        observed.event_counts[event_id] = int(n)
    rows = client.query(f"SELECT room_name, participant_id, minutes FROM {database}.connections").result_rows
    for room, participant, minutes in rows:
        observed.connection_rows[(room, participant)] += 1
        if minutes is not None:
            observed.minutes[(room, participant)] = int(minutes)
    return observed


def from_deliveries(event_ids: list[str]) -> Observed:
    """The control: every delivered record counted as it arrived, with no deduplication."""
    return Observed(event_counts=Counter(event_ids))
