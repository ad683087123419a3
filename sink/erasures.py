"""The erasures every sink process knows of, followed on the dimensions topic.

The sink's consumer group reads the dimensions topic from its committed position, and only one member
owns its single partition; yet every process must scrub every batch it inserts (:mod:`sink.scrub`),
including after a restart. So each process also reads the topic on its own, group-less, like enrich
does: from the beginning to the end before the stage consumes anything, then following it. Only
`erase:` records are used; every other record (and an invalid one, which the consumer group's path
dead-letters) is skipped here.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from pipeline import contract, kafka
from pipeline.dimensions import DimensionError, Erasure, Tombstone, decode
from pipeline.erasure import ErasureSet
from pipeline.settings import CommonSettings

log = logging.getLogger(__name__)

_ERASE = contract.DIM_ERASE_PREFIX.encode()


def apply_record(erasures: ErasureSet, key: bytes | None, value: bytes | None) -> bool:
    """Apply one dimensions-topic record to `erasures` if it is an (valid) erasure or its withdrawal;
    returns True when it was one."""
    if not key or not key.startswith(_ERASE):
        return False
    try:
        record = decode(key, value)
    except DimensionError:
        return False
    if isinstance(record, Erasure):
        erasures.add(record.subject, record.pseudonym)
        return True
    if isinstance(record, Tombstone):
        erasures.remove(record.ident)
        return True
    return False


class ErasureFollower:
    """Owns a group-less consumer of the dimensions topic and keeps an ErasureSet current."""

    def __init__(self, settings: CommonSettings, erasures: ErasureSet) -> None:
        self.settings = settings
        self.erasures = erasures
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Read the topic from the beginning to its current end, then return."""
        consumer = kafka.consumer(self.settings, group_id=None)
        await consumer.start()
        self._consumer = consumer
        tps = await kafka.partitions_of(self.settings, self.settings.topic_dimensions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            self._apply(await consumer.getmany(timeout_ms=500))
        if self.erasures:
            log.info(f"{len(self.erasures)} erased people known; their events are scrubbed on insert")

    async def follow(self) -> None:
        """Apply later records as they arrive, until cancelled."""
        assert self._consumer is not None
        while True:
            self._apply(await self._consumer.getmany(timeout_ms=1000))

    def _apply(self, batches: dict[object, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batches.values():
            for record in records:
                # One this release cannot read is skipped; the sink's own consumer dead-letters it.
                if contract.version_failure(record.headers) is None:
                    apply_record(self.erasures, record.key, record.value)

    async def stop(self) -> None:
        """Close the consumer. Idempotent."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
