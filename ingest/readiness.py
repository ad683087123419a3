"""Whether the producer can reach the broker, from real traffic rather than "the producer exists".

Two kinds of evidence feed one flag, and the latest wins: the outcome of every produce, and a periodic
metadata round-trip to the broker (so readiness also recovers, and also fails, when no webhooks arrive).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest import metrics

log = logging.getLogger(__name__)


class BrokerHealth:
    """The latest evidence about broker connectivity; logs only when it changes."""

    def __init__(self) -> None:
        self._reachable = False
        metrics.BROKER_READY.set(0)

    @property
    def reachable(self) -> bool:
        """True while the most recent produce or probe succeeded."""
        return self._reachable

    def succeeded(self) -> None:
        """The broker acknowledged a record or answered a metadata request."""
        if not self._reachable:
            self._reachable = True
            metrics.BROKER_READY.set(1)
            log.info("broker reachable")

    def failed(self, why: str) -> None:
        """A produce or a probe failed or timed out; `why` is an exception class name, never a payload."""
        if self._reachable:
            self._reachable = False
            metrics.BROKER_READY.set(0)
            log.warning("broker unreachable", extra={"error": why})


async def probe(producer: AIOKafkaProducer, health: BrokerHealth, timeout_s: float) -> None:
    """One metadata round-trip through the producer's own client; records the result in `health`.

    It asks only for the producer's own topics (a whole-cluster request costs real CPU on a broker with
    many topics) and refreshes the producer's metadata on the way, e.g. a new partition leader.
    """
    try:
        async with asyncio.timeout(timeout_s):
            updated = await producer.client.force_metadata_update()
    except (TimeoutError, KafkaError, OSError) as exc:
        health.failed(type(exc).__name__)
        return
    if updated:
        health.succeeded()
    else:
        health.failed("metadata update failed")
