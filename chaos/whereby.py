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
        # When (time.monotonic()) each 503 and each unanswered attempt happened: how long the outage lasted.
        self.unavailable_at: list[float] = []
        self.no_answer_at: list[float] = []

    async def _deliver(self, http: aiohttp.ClientSession, event: Event, *, bad_signature: bool = False) -> None:
        for attempt in range(1 + len(BACKOFF_S)):
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
                        self.unavailable_at.append(time.monotonic())
                    if 200 <= response.status < 300:
                        if not bad_signature:
                            self.acked.add(event.event_id)
                        return
                    if response.status < 500:
                        return  # final for Whereby: a client fault is never retried
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.statuses["no_answer"] += 1
                self.no_answer_at.append(time.monotonic())
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
        """How long webhooks went without a 2xx: 503 answers (and unanswered attempts) grouped into incidents
        (none more than OUTAGE_GAP_S apart), with their count, total and longest duration."""
        out: dict[str, float | int] = {}
        for label, times in (("answered_503", self.unavailable_at), ("no_answer", self.no_answer_at)):
            spans = incidents(times)
            out[f"{label}_s"] = round(sum(end - start for start, end in spans), 1)
            out[f"{label}_longest_s"] = round(max((end - start for start, end in spans), default=0.0), 1)
            out[f"{label}_incidents"] = len(spans)
        return out


OUTAGE_GAP_S = 2.0


def incidents(times: list[float], gap_s: float = OUTAGE_GAP_S) -> list[tuple[float, float]]:
    """Moments grouped into (first, last) spans, a new span wherever two are more than `gap_s` apart."""
    spans: list[tuple[float, float]] = []
    for t in sorted(times):
        if spans and t - spans[-1][1] <= gap_s:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return spans
