"""One failure type for every stage: a record (or request) that cannot be used, as a bounded `reason`
code and a human `detail`.

Every stage turns failures into the same things (a metric label, a dead-letter record, a 4xx answer), so
they share one base: :mod:`pipeline.deadletters` takes any :class:`Failure` and writes the same bad row
whichever stage raised it. A stage-specific failure subclasses it only to carry something more (the
envelope field at fault) or to be caught apart (a bad signature is answered, never dead-lettered).

`reason` becomes a metric label and a dead-letter field: keep it to a short, bounded set of codes and
never put sender data in it. `detail` may quote what was wrong, so it is never logged (only stored on
the dead-letter topic, or answered to the sender).
"""

from __future__ import annotations


class Failure(Exception):
    """A record or request that cannot be used. `reason`: bounded code; `detail`: the explanation;
    `event_id`: the Whereby event id it concerns, when one could still be read (for the bad row)."""

    def __init__(self, reason: str, detail: str, event_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.event_id = event_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.detail!r})"
