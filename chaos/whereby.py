"""Delivers webhooks the way Whereby does (reference §1.6): retry on 5xx, on no answer within 5 s and on
connection errors, at most twice, with a short backoff. An event counts as acknowledged when any
attempt got a 2xx: that is the set the pipeline promised to keep.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable

import aiohttp

from chaos.workload import Event
from ingest import signature

TIMEOUT_S = 5.0
BACKOFF_S = (0.5, 1.5)


class Whereby:
    """A bounded, rate-limited sender with Whereby's retry policy."""

    def __init__(self, url: str, secret: str, *, rate: float = 300.0, concurrency: int = 200) -> None:
        self.url = url
        self.secret = secret
        self.rate = rate
        self.concurrency = concurrency
        self.acked: set[str] = set()
        self.gave_up: set[str] = set()
        self.statuses: Counter[str] = Counter()
        # (sent, answered) in time.monotonic() of each attempt answered 503 and each left unanswered: the
        # webhooks that could not be stored, from when they were sent to when the sender learnt it.
        self.unavailable_at: list[tuple[float, float]] = []
        self.no_answer_at: list[tuple[float, float]] = []

    async def _deliver(self, http: aiohttp.ClientSession, event: Event, *, bad_signature: bool = False) -> None:
        for attempt in range(1 + len(BACKOFF_S)):
            sent_at = time.monotonic()
            header = signature.sign(event.body, "not-the-secret" if bad_signature else self.secret)
            try:
                async with http.post(
                    self.url,
                    data=event.body,
                    headers={"Content-Type": "application/json", "Whereby-Signature": header},
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                ) as response:
                    await response.read()
                    self.statuses[str(response.status)] += 1
                    if response.status == 503:
                        self.unavailable_at.append((sent_at, time.monotonic()))
                    if 200 <= response.status < 300:
                        if not bad_signature:
                            self.acked.add(event.event_id)
                        return
                    if response.status < 500:
                        return  # final for Whereby: a client fault is never retried
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.statuses["no_answer"] += 1
                self.no_answer_at.append((sent_at, time.monotonic()))
            if attempt < len(BACKOFF_S):
                await asyncio.sleep(BACKOFF_S[attempt])
        if not bad_signature:
            self.gave_up.add(event.event_id)

    async def send(self, events: Iterable[Event], *, bad_signature: bool = False) -> None:
        """Send every event at `rate` per second with bounded concurrency; returns when all are settled."""
        limit = asyncio.Semaphore(self.concurrency)
        # No connection-pool queueing on our side: the semaphore bounds concurrency, and a request
        # waiting for a pooled connection would time out here without ever reaching the receiver.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def one(event: Event) -> None:
                try:
                    await self._deliver(http, event, bad_signature=bad_signature)
                finally:
                    limit.release()

            tasks = []
            start = time.monotonic()
            for i, event in enumerate(events):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await limit.acquire()
                tasks.append(asyncio.create_task(one(event)))
            await asyncio.gather(*tasks)

    def outage(self) -> dict[str, float | int]:
        """How long webhooks could not be stored: attempts answered 503 (and attempts left unanswered), each
        from its sending to its answer, merged into incidents (overlapping or at most OUTAGE_GAP_S apart),
        with their count, total and longest duration."""
        out: dict[str, float | int] = {}
        for label, attempts in (("answered_503", self.unavailable_at), ("no_answer", self.no_answer_at)):
            spans = incidents(attempts)
            out[f"{label}_s"] = round(sum(end - start for start, end in spans), 1)
            out[f"{label}_longest_s"] = round(max((end - start for start, end in spans), default=0.0), 1)
            out[f"{label}_incidents"] = len(spans)
        return out


OUTAGE_GAP_S = 2.0


def incidents(attempts: list[tuple[float, float]], gap_s: float = OUTAGE_GAP_S) -> list[tuple[float, float]]:
    """(start, end) intervals merged into spans: a new span wherever one starts more than `gap_s` after
    every earlier one ended."""
    spans: list[tuple[float, float]] = []
    for start, end in sorted(attempts):
        if spans and start - spans[-1][1] <= gap_s:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans
