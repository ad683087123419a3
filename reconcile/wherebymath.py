"""Whereby's own arithmetic for session totals from participant rows. Pure.

Used when an Insights room-sessions row lacks a total (the schema is loose): per connection the duration
rounded **up** to whole minutes (reference §4), summed; recorder and streamer apart, every other role
(assistants, captioners and unknown roles included) in participant minutes. A connection that has not
left yet adds nothing: Insights cannot have billed it either.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconcile.shapes import InsightsParticipant

MINUTE_MS = 60_000


def connection_minutes(row: InsightsParticipant) -> int:
    """ceil((leftAt - joinedAt) / 1 min), 0 without a `leftAt`."""
    if row.left_at_ms is None:
        return 0
    return -(-(row.left_at_ms - row.joined_at_ms) // MINUTE_MS)


def totals(rows: Iterable[InsightsParticipant]) -> tuple[int, int, int]:
    """(participant, recorder, streamer) minutes of a session's rows."""
    participant = recorder = streamer = 0
    for row in rows:
        minutes = connection_minutes(row)
        if row.role_name == "recorder":
            recorder += minutes
        elif row.role_name == "streamer":
            streamer += minutes
        else:
            participant += minutes
    return participant, recorder, streamer
