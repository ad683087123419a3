"""The comparison rule: which of our minutes are compared with which of Insights', and the status. Pure.

Insights' `totalParticipantMinutes` counts every connection except the recorder's and the streamer's
(reference §4: "anyone who joins a room counts as a participant", recording and streaming are reported
separately, assistants are billed like participants). Our model keeps human, assistant and captioner
minutes apart, so the number compared with it is their **sum**; recorder is compared with recorder and
streamer with streamer. A session is

- `match` when all three numbers are equal,
- `mismatch` when we hold the session but any of them differs,
- `missing` when Insights has the session and we hold nothing of it.

The statuses are the contract's (`pipeline.contract.RECONCILIATION_STATUSES`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconcile.shapes import OurConnection, OurSession

MATCH, MISMATCH, MISSING = "match", "mismatch", "missing"


@dataclass(frozen=True)
class Minutes:
    """One side's minutes of a session. `human`, `assistant` and `captioner` are our breakdown of
    `participant` (None on the Insights side, which has no breakdown)."""

    participant: int
    recorder: int
    streamer: int
    human: int | None = None
    assistant: int | None = None
    captioner: int | None = None

    def key(self) -> tuple[int, int, int]:
        """The three numbers that must be equal for a match."""
        return self.participant, self.recorder, self.streamer

    def as_dict(self) -> dict[str, int]:
        """The JSON form (`participant_minutes`, ...), with our breakdown when there is one."""
        doc = {
            "participant_minutes": self.participant,
            "recorder_minutes": self.recorder,
            "streamer_minutes": self.streamer,
        }
        if self.human is not None:
            doc["human_minutes"] = self.human
            doc["assistant_minutes"] = self.assistant or 0
            doc["captioner_minutes"] = self.captioner or 0
        return doc


NONE = Minutes(0, 0, 0, 0, 0, 0)


def ours(session: OurSession, connections: Iterable[OurConnection] = ()) -> Minutes:
    """Our comparable minutes of a session. Assistant and captioner minutes come from the session's totals
    when the read API has them, else they are summed from `connections` by role class."""
    listed = list(connections)
    assistant = session.assistant
    if assistant is None:
        assistant = sum(c.minutes for c in listed if c.role_class == "assistant")
    captioner = session.captioner
    if captioner is None:
        captioner = sum(c.minutes for c in listed if c.role_class == "captioner")
    return Minutes(
        participant=session.human + assistant + captioner,
        recorder=session.recorder,
        streamer=session.streamer,
        human=session.human,
        assistant=assistant,
        captioner=captioner,
    )


def status(our: Minutes | None, insights: Minutes) -> str:
    """`missing` (we hold nothing of the session), `match` or `mismatch`."""
    if our is None:
        return MISSING
    return MATCH if our.key() == insights.key() else MISMATCH
