"""A run's report as the records of the reconciliation topic and as the command's output. Pure.

The JSON output is the issue's shape: `{"from", "to", "sessions": [{"roomSessionId", "roomName",
"customer_id", "status", "ours": {...}, "insights": {...}, ...}], "backfilled_events"}`, each session
also with `startedAt`, its own `backfilled_events` and `after_backfill`; `ours` adds our breakdown of
`participant_minutes` (`human_minutes`, `assistant_minutes`, `captioner_minutes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from pipeline import contract
from reconcile.report import Report, SessionResult
from reconcile.times import whereby_time

UNRESOLVED = "(unresolved)"


def session_doc(result: SessionResult) -> dict[str, Any]:
    """One session in the JSON output."""
    return {
        "roomSessionId": result.room_session_id,
        "roomName": result.room_name,
        "customer_id": result.customer_id,
        "startedAt": whereby_time(result.started_at_ms),
        "status": result.status,
        "ours": result.ours.as_dict(),
        "insights": result.insights.as_dict(),
        "backfilled_events": result.backfilled_events,
        "after_backfill": result.after_backfill,
    }


def report_doc(report: Report) -> dict[str, Any]:
    """The whole JSON output of one run."""
    return {
        "from": whereby_time(report.from_ms),
        "to": whereby_time(report.to_ms),
        "sessions": [session_doc(s) for s in report.sessions],
        "backfilled_events": report.backfilled_events,
    }


def record(report: Report, result: SessionResult) -> contract.ReconciliationRecord:
    """One session's record for the reconciliation topic."""
    ours = result.ours.as_dict()
    return {
        "schema": contract.RECONCILIATION_SCHEMA,
        "run_id": report.run_id,
        "checked_at_ms": report.checked_at_ms,
        "period_from_ms": report.from_ms,
        "period_to_ms": report.to_ms,
        "room_session_id": result.room_session_id,
        "room_name": result.room_name,
        "customer_id": result.customer_id,
        "started_at_ms": result.started_at_ms,
        "status": result.status,
        "after_backfill": result.after_backfill,
        "ours": {
            "participant_minutes": ours["participant_minutes"],
            "recorder_minutes": ours["recorder_minutes"],
            "streamer_minutes": ours["streamer_minutes"],
            "human_minutes": ours.get("human_minutes", 0),
            "assistant_minutes": ours.get("assistant_minutes", 0),
            "captioner_minutes": ours.get("captioner_minutes", 0),
        },
        "insights": {
            "participant_minutes": result.insights.participant,
            "recorder_minutes": result.insights.recorder,
            "streamer_minutes": result.insights.streamer,
        },
        "backfilled_events": result.backfilled_events,
    }


def records(report: Report) -> list[tuple[bytes, bytes]]:
    """(key = roomSessionId, JSON value) of every session of the run."""
    return [(s.room_session_id.encode(), orjson.dumps(record(report, s))) for s in report.sessions]


def render_json(report: Report) -> str:
    """The run as indented JSON."""
    return orjson.dumps(report_doc(report), option=orjson.OPT_INDENT_2).decode() + "\n"


_HEADINGS = ("session", "room", "customer", "status", "ours p/r/s", "insights p/r/s", "backfilled", "after")


def _row(result: SessionResult) -> list[str]:
    ours, theirs = result.ours, result.insights
    return [
        result.room_session_id,
        result.room_name,
        result.customer_id or UNRESOLVED,
        result.status,
        f"{ours.participant}/{ours.recorder}/{ours.streamer}",
        f"{theirs.participant}/{theirs.recorder}/{theirs.streamer}",
        str(result.backfilled_events),
        result.after_backfill or "-",
    ]


def render_table(report: Report) -> str:
    """One aligned row per session, then a summary line."""
    counts = report.counts()
    summary = (
        f"{whereby_time(report.from_ms)} .. {whereby_time(report.to_ms)}: {len(report.sessions)} sessions "
        f"({counts['match']} match, {counts['mismatch']} mismatch, {counts['missing']} missing) in "
        f"{report.rooms_checked} rooms ({report.unresolved_rooms} unresolved); "
        f"backfilled {report.backfilled_events} events"
    )
    if not report.sessions:
        return summary + "\n"
    body: Sequence[list[str]] = [_row(s) for s in report.sessions]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(_HEADINGS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(_HEADINGS), rule, *(line(r) for r in body), rule, summary]) + "\n"
