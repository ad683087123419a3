"""What one reconcile run found and did, per session. Pure data (read by `results`, filled by `run`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from reconcile.compare import Minutes


@dataclass
class SessionResult:
    """One session's outcome."""

    room_session_id: str
    room_name: str
    customer_id: str | None
    started_at_ms: int
    status: str
    ours: Minutes
    insights: Minutes
    backfilled_events: int = 0
    after_backfill: str | None = None


@dataclass
class Report:
    """Everything one run found and did."""

    run_id: str
    checked_at_ms: int
    from_ms: int
    to_ms: int
    sessions: list[SessionResult] = field(default_factory=list)
    backfilled_events: int = 0
    rooms_checked: int = 0
    unresolved_rooms: int = 0
    skipped_rows: dict[str, int] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        """Sessions per status found."""
        return Counter(s.status for s in self.sessions)
