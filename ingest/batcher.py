"""Per-partition batching in front of the producer: many concurrent requests, one batch, one ack.

Why: aiokafka's `send()` costs tens of microseconds per record (metadata check, a pure-Python murmur2,
a future per record) and a per-request timeout adds a timer per record. At webhook rates that work,
not the broker, bounded the receiver (see bench/ingest_bench.py). Here a request appends its record to
the open batch of its partition (a C-level append) and waits for that batch's acknowledgement. A
producer ("lane") that has nothing in flight takes the oldest waiting batch of every partition at once,
so they travel in one produce request; the next batches fill while it is in flight. Batches grow with
load and shrink to a single record when idle, with no linger, and the broker handles few, large
requests instead of one per partition per round trip.

The guarantees are the producer's (idempotent, acks=all): a record counts as stored only when its
batch was acknowledged. A batch that is not acknowledged within the timeout fails every record in it,
so each request answers 503 and Whereby retries. A batch that times out before it was handed to the
producer is dropped, so it is never written after its senders were told it was not stored. (One that
was handed over may still be written later: a duplicate of the retry, which downstream dedupes on id.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.failures import Failure
from pipeline.partitioning import partition_for


class StoreError(Failure):
    """A record was not acknowledged (the request answers 503). `reason` is a bounded code,
    produce_timeout or produce_failed; `detail` the cause (an exception class name)."""


class _Batch:
    """One batch being filled or in flight, with a future per record's request (not one shared future:
    a cancelled request must not cancel the others' wait)."""

    __slots__ = ("builder", "settled", "timer", "waiters")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.waiters: list[asyncio.Future[None]] = []
        self.settled = False
        self.timer: asyncio.TimerHandle | None = None


class Batcher:
    """Stores records on one topic, batching concurrent ones per partition.

    `producers` are lanes. aiokafka sends one request per broker at a time, so a lane is either idle or
    has exactly one "flight" out: the oldest waiting batch of every partition, handed over together so
    they share one produce request. With one lane a record that just missed a flight waits for that
    flight's whole round trip before its own starts; a second lane lets it go at once. (Handing a
    partition's batch to a lane that is busy with other partitions would queue it behind that lane's
    request while another lane sits idle.) Only requests that overlap in time can be reordered by
    the lanes, and those had no order to keep; a request sent after another was answered is always
    written after it.

    `on_outcome(ok, why)` is told about every batch (for readiness): True after an acknowledgement,
    False with an exception class name after a failure or timeout.
    """

    def __init__(
        self,
        producers: Sequence[AIOKafkaProducer],
        topic: str,
        partitions: Iterable[int],
        *,
        timeout_s: float,
        on_outcome: Callable[[bool, str], None] | None = None,
    ) -> None:
        if not producers:
            raise ValueError("at least one producer is needed")
        self._producers = tuple(producers)
        self._producer = self._producers[0]
        self.topic = topic
        self._partitions = tuple(sorted(partitions))
        if not self._partitions:
            raise ValueError(f"topic {topic!r} has no partitions")
        self._timeout_s = timeout_s
        self._on_outcome = on_outcome or (lambda ok, why: None)
        self._waiting: dict[int, deque[_Batch]] = {}
        self._idle = list(reversed(range(len(self._producers))))  # lanes with nothing in flight; pop() -> 0 first
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def refresh_partitions(self) -> None:
        """Pick up a changed partition count from the producer's current metadata."""
        known = self._producer.client.cluster.partitions_for_topic(self.topic)
        if known:
            self._partitions = tuple(sorted(known))

    async def store(self, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        """Return once the record is acknowledged by the broker; raise StoreError if it is not in time."""
        p = partition_for(key, self._partitions)
        waiting = self._waiting.get(p)
        if waiting is None:
            waiting = self._waiting[p] = deque()
        batch = waiting[-1] if waiting else None
        if batch is None or batch.builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            batch = self._new_batch(p)
            waiting.append(batch)
            # A fresh batch takes any one record (the broker enforces its own size limit).
            batch.builder.append(key=key, value=value, timestamp=None, headers=headers)
        if not self._scheduled and self._idle:
            # Hand over after this turn of the event loop, so requests read together share the flight.
            self._scheduled = True
            self._loop.call_soon(self._hand_over)
        waiter = self._loop.create_future()
        batch.waiters.append(waiter)
        await waiter

    async def drain(self, timeout_s: float) -> None:
        """Hand over what is waiting and wait (at most `timeout_s`) for every batch to be settled.

        For shutdown, after the HTTP server stopped: by then every request has had its answer, so a batch
        still unacknowledged after the timeout is abandoned (its requests were already told 503).
        """
        loop = self._loop
        deadline = loop.time() + timeout_s
        while (self._tasks or any(self._waiting.values())) and loop.time() < deadline:
            self._hand_over()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - loop.time()))
        for task in list(self._tasks):
            task.cancel()
        for waiting in self._waiting.values():
            while waiting:
                self._settle(waiting.popleft(), StoreError("produce_failed", "shutting down"))

    def _new_batch(self, partition: int) -> _Batch:
        batch = _Batch(self._producer.create_batch())
        batch.timer = self._loop.call_later(self._timeout_s, self._expire, partition, batch)
        return batch

    def _hand_over(self) -> None:
        self._scheduled = False
        while self._idle:
            flight = [(p, waiting.popleft()) for p, waiting in self._waiting.items() if waiting]
            if not flight:
                return
            lane = self._idle.pop()
            task = self._loop.create_task(self._send(lane, flight))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, lane: int, flight: list[tuple[int, _Batch]]) -> None:
        producer = self._producers[lane]
        try:
            # No await in between suspends while the lane is idle (its queues are empty and the metadata
            # known), so the sender drains all of these into one produce request.
            sent: list[tuple[_Batch, asyncio.Future[Any]]] = []
            for partition, batch in flight:
                try:
                    sent.append((batch, await producer.send_batch(batch.builder, self.topic, partition=partition)))
                except Exception as exc:  # e.g. closed producer, unknown partition: those requests answer 503
                    self._failed(batch, exc)
            for batch, delivery in sent:
                try:
                    await delivery
                except Exception as exc:  # every failure means "not stored": the waiting requests answer 503
                    self._failed(batch, exc)
                else:
                    self._settle(batch, None)
                    self._on_outcome(True, "")
        except asyncio.CancelledError:
            for _, batch in flight:
                self._settle(batch, StoreError("produce_failed", "shutting down"))
            raise
        finally:
            self._idle.append(lane)
            if any(self._waiting.values()) and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                self._hand_over()

    def _failed(self, batch: _Batch, exc: BaseException) -> None:
        self._settle(batch, StoreError("produce_failed", type(exc).__name__))
        self._on_outcome(False, type(exc).__name__)

    def _expire(self, partition: int, batch: _Batch) -> None:
        if batch.settled:
            return
        waiting = self._waiting.get(partition)
        if waiting and batch in waiting:
            waiting.remove(batch)  # never handed over: drop it, nobody will be told it was stored
        self._settle(batch, StoreError("produce_timeout", "no acknowledgement in time"))
        self._on_outcome(False, "produce timeout")

    @staticmethod
    def _settle(batch: _Batch, error: StoreError | None) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.settled:
            return
        batch.settled = True
        for waiter in batch.waiters:
            if waiter.done():  # its request was cancelled (client gone, shutdown): nobody to tell
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


async def partitions_of(producer: AIOKafkaProducer, topic: str, timeout_s: float) -> set[int]:
    """The partitions of `topic` from the producer's metadata (waits, bounded, for it to arrive)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            return set(await producer.partitions_for(topic))
    return set()
