"""Which partition a keyed record goes to: Kafka's default partitioner (murmur2 of the key, as the Java
client and aiokafka's `send(key=...)` pick), in one place for every stage that chooses partitions itself.

Ingest (its batcher) and enrich (its per-partition record batches) hand whole batches to the producer,
so they pick the partition themselves; both must pick what any other client would, or per-room order
breaks and keyed consumers look in the wrong place. aiokafka's murmur2 is pure Python, so the hash is
cached per key: room names repeat for every event of a meeting.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

# Bounded: a cache hit is a dict lookup, a miss one pure-Python hash (a few microseconds).
HASH_CACHE_SIZE = 65536


@functools.lru_cache(maxsize=HASH_CACHE_SIZE)
def key_hash(key: bytes) -> int:
    """The non-negative murmur2 hash Kafka's default partitioner takes the modulo of."""
    value: int = murmur2(key) & 0x7FFFFFFF
    return value


def partition_for(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner picks for `key` among `partitions` (sorted, as the
    cluster metadata lists them); a random one without a key, as the default partitioner does."""
    if key is None:
        return random.choice(partitions)
    return partitions[key_hash(key) % len(partitions)]
