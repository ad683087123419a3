"""The Whereby envelope as ingest sees it: the shared check of :mod:`pipeline.envelope` (the same rules
and reason codes enrich applies) plus the bounded event-type label of ingest's metrics."""

from __future__ import annotations

from pipeline.envelope import MAX_ID_LENGTH, Envelope, EnvelopeError, is_date_time
from pipeline.envelope import check as parse

__all__ = [
    "KNOWN_EVENT_TYPES",
    "MAX_ID_LENGTH",
    "OTHER_EVENT_TYPE",
    "Envelope",
    "EnvelopeError",
    "is_date_time",
    "parse",
    "type_label",
]

# The event types of reference §1.2. Anything else is still accepted and forwarded; this set only
# bounds the `type` label of the metrics, so a sender cannot grow the label space.
KNOWN_EVENT_TYPES = frozenset(
    {
        "room.client.joined",
        "room.client.left",
        "room.client.knocked",
        "room.client.knockCancelled",
        "room.session.started",
        "room.session.ended",
        "transcription.started",
        "transcription.finished",
        "transcription.failed",
        "recording.finished",
        "assistant.requested",
    }
)
OTHER_EVENT_TYPE = "other"


def type_label(event_type: str) -> str:
    """`event_type` if it is a documented Whereby type, else "other" (a bounded metric label)."""
    return event_type if event_type in KNOWN_EVENT_TYPES else OTHER_EVENT_TYPE
