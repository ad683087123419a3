"""The deriver: keeps `connection_rows` and `session_rows` equal to the minute model over `events`.

Every insert into `events` also lands one row per touched room in `room_changes` (a materialized view,
so the note of a change is as durable as the change). The deriver reads those notes after its
watermark, and for each room recomputes the part of the room a change can affect with the pure model
(:mod:`sink.model`), then writes the rows that differ and a `deleted` row for each row that is gone.

Which part of a room: from the moment the room was last known empty before the earliest changed event
(minus `ENDED_GRACE_MS`, so a late id-less `session.ended` finds the session it ends), extended back
until every session with an event in that part is wholly inside it. Everything a connection's minutes
depend on then lies in the part: its own events, its session's events, and the room's events up to the
next known-empty moment. Rows outside the part are left as they are; nothing after the part is skipped.

Crash safety: the watermark is advanced (and persisted) only after the rows are written; a crash in
between recomputes the same rooms again, which writes nothing new (unchanged rows are recognised by
their hash). Versions are nanosecond timestamps taken before reading, strictly increasing in a process
and above every version already stored for the rows being replaced, so a later recomputation (which
read more) always wins over an earlier one.

Runs in the sink process (the embedded engine admits one process) on its own ClickHouse handle and
its own thread, so it never waits for, nor holds up, the writer's inserts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from sink import metrics
from sink.model import (
    ENDED_GRACE_MS,
    Connection,
    Dims,
    Event,
    ParticipantKey,
    RoomModel,
    Session,
    derive,
    previous_anchors,
)

log = logging.getLogger(__name__)

CONNECTION_ROWS = "connection_rows"
SESSION_ROWS = "session_rows"
STATE_NAME = "rooms"
# Rows of `room_changes` are read again for this long after the watermark passed them: an insert's rows
# become visible when it finishes, which can be after a later insert's rows were already read.
OVERLAP_MS = 30_000
# A part of a room is extended back at most this many times to take in whole sessions (each round
# moves it to an earlier known-empty moment); more means a pathological room, and the part as it is
# then is still a correct superset of what changed, only some sessions keep their previous rows.
MAX_EXTENSIONS = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALL_TIME_MS = 0

CONNECTION_COLUMNS = (
    "room_name",
    "connection_id",
    "anchor_at",
    "participant_id",
    "session_key",
    "room_session_id",
    "session_via",
    "customer_id",
    "customer_name",
    "user_id",
    "user_name",
    "external_id",
    "display_name",
    "role_name",
    "role_class",
    "metadata",
    "user_key",
    "user_source",
    "party",
    "joined_at",
    "left_at",
    "ended_at",
    "end_source",
    "duration_ms",
    "minutes",
    "sources",
    "dims_version",
    "prev_anchor_at",
    "row_hash",
    "version",
    "deleted",
)
SESSION_COLUMNS = (
    "room_name",
    "session_key",
    "started_at",
    "room_session_id",
    "start_source",
    "ended_at",
    "first_event_at",
    "last_event_at",
    "customer_id",
    "customer_name",
    "participant_minutes",
    "recorder_minutes",
    "streamer_minutes",
    "assistant_minutes",
    "captioner_minutes",
    "connections",
    "open_connections",
    "incomplete_connections",
    "estimated_connections",
    "unique_participants",
    "unique_recorders",
    "unique_streamers",
    "first_host_joined_at",
    "first_guest_joined_at",
    "dims_version",
    "row_hash",
    "version",
    "deleted",
)

_EVENT_COLUMNS = """
    room_name, event_id, event_type, toUnixTimestamp64Milli(created_at) AS at, participant_id, room_session_id,
    num_clients, source, enrichment_version, customer_id, customer_name, user_id, user_name, external_id,
    display_name, role_name, role_class, metadata, user_key, user_source"""
# Per-room lower bounds travel as two parallel arrays; `transform` looks each row's bound up in a hash map.
_SINCE = (
    "fromUnixTimestamp64Milli(transform(room_name, {rooms:Array(String)}, {since:Array(Int64)}, toInt64(0)), 'UTC')"
)
_FINAL = {"do_not_merge_across_partitions_select_final": 1}


def at(ms: int) -> int:
    """A DateTime64(3) value as clickhouse-connect inserts it: the raw ticks, i.e. epoch milliseconds.
    (Handing it ints rather than datetimes halves the cost of writing a derived row.)"""
    return ms


def _maybe_at(ms: int | None) -> int | None:
    return ms


def _hash(values: Sequence[Any]) -> int:
    """A stable 64-bit fingerprint of a row's content (not its version): unchanged rows are not rewritten."""
    doc = orjson.dumps(list(values), option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC, default=str)
    return int.from_bytes(hashlib.blake2b(doc, digest_size=8).digest(), "little")


def connection_values(room: str, c: Connection, prev_anchor_ms: int | None = None) -> list[Any]:
    """The row of `connection_rows` for one connection, without row_hash, version and deleted;
    `prev_anchor_ms` is its participant's previous connection (model §9)."""
    d = c.dims
    return [
        room,
        c.connection_id,
        at(c.anchor_at),
        c.participant_id,
        c.session_key,
        c.room_session_id,
        c.session_via,
        d.customer_id,
        d.customer_name,
        d.user_id,
        d.user_name,
        d.external_id,
        d.display_name,
        d.role_name,
        d.role_class or "human",
        dict(d.metadata),
        d.user_key,
        d.user_source,
        c.party,
        _maybe_at(c.joined_at),
        _maybe_at(c.left_at),
        _maybe_at(c.ended_at),
        c.end_source,
        c.duration_ms,
        c.minutes,
        c.sources,
        c.dims_version,
        _maybe_at(prev_anchor_ms),
    ]


def session_values(room: str, s: Session) -> list[Any]:
    """The row of `session_rows` for one session, without row_hash, version and deleted."""
    u = s.usage
    return [
        room,
        s.session_key,
        at(s.started_at),
        s.room_session_id,
        s.start_source,
        _maybe_at(s.ended_at),
        at(s.first_event_at),
        at(s.last_event_at),
        s.dims.customer_id,
        s.dims.customer_name,
        u.participant_minutes,
        u.recorder_minutes,
        u.streamer_minutes,
        u.assistant_minutes,
        u.captioner_minutes,
        u.connections,
        u.open_connections,
        u.incomplete_connections,
        u.estimated_connections,
        u.unique_participants,
        u.unique_recorders,
        u.unique_streamers,
        _maybe_at(s.arrivals.first_host_joined_at),
        _maybe_at(s.arrivals.first_guest_joined_at),
        s.dims_version,
    ]


@dataclass
class Existing:
    """A stored row's identity: its partition anchor, content hash and version."""

    anchor_ms: int
    row_hash: int
    version: int


@dataclass
class Outcome:
    """What one recomputation wrote."""

    rooms: int = 0
    events: int = 0
    upserts: dict[str, int] = field(default_factory=lambda: {CONNECTION_ROWS: 0, SESSION_ROWS: 0})
    deletes: dict[str, int] = field(default_factory=lambda: {CONNECTION_ROWS: 0, SESSION_ROWS: 0})

    def add(self, other: Outcome) -> None:
        self.rooms += other.rooms
        self.events += other.events
        for table in self.upserts:
            self.upserts[table] += other.upserts[table]
            self.deletes[table] += other.deletes[table]


def _month(ms: int) -> tuple[int, int]:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.year, moment.month


class RoomStore:
    """The queries the deriver runs for a set of rooms at once (one round trip per question, not per room)."""

    def __init__(self, client: Client, database: str) -> None:
        self.client = client
        self.db = database

    def _rows(self, sql: str, params: dict[str, Any], settings: dict[str, Any] | None = None) -> list[Any]:
        return list(self.client.query(sql, parameters=params, settings=settings).result_rows)

    @staticmethod
    def _bounds(since: Mapping[str, int | None]) -> dict[str, Any]:
        rooms = list(since)
        return {"rooms": rooms, "since": [v if v is not None else _ALL_TIME_MS for v in since.values()]}

    def boundaries_before(self, moments: Mapping[str, int]) -> dict[str, int]:
        """Per room, the time of the latest known-empty event strictly before the given moment (rooms
        never known empty before it are absent: their part starts at their first event)."""
        sql = f"""
SELECT room_name, toUnixTimestamp64Milli(max(created_at))
FROM {self.db}.events
WHERE room_name IN {{rooms:Array(String)}}
  AND created_at < {_SINCE}
  AND ((event_type IN ('room.client.joined', 'room.client.left') AND num_clients = 0)
       OR (event_type = 'room.client.joined' AND num_clients = 1))
GROUP BY room_name"""
        return {room: int(ms) for room, ms in self._rows(sql, self._bounds(dict(moments)))}

    def first_session_events(self, since: Mapping[str, int | None]) -> dict[str, int]:
        """Per room, the earliest event of any session that has an event at or after the room's bound."""
        sql = f"""
SELECT room_name, toUnixTimestamp64Milli(min(created_at))
FROM {self.db}.events
WHERE room_name IN {{rooms:Array(String)}}
  AND room_session_id IN (
      SELECT DISTINCT room_session_id FROM {self.db}.events
      WHERE room_name IN {{rooms:Array(String)}} AND room_session_id IS NOT NULL AND created_at >= {_SINCE})
GROUP BY room_name"""
        return {room: int(ms) for room, ms in self._rows(sql, self._bounds(since))}

    def events(self, since: Mapping[str, int | None]) -> dict[str, list[Event]]:
        """The events of each room at or after its bound, one row per event id (its newest enrichment)."""
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM {self.db}.events FINAL "
            f"WHERE room_name IN {{rooms:Array(String)}} AND created_at >= {_SINCE}"
        )
        out: dict[str, list[Event]] = {room: [] for room in since}
        for row in self._rows(sql, self._bounds(since), _FINAL):
            (
                room,
                event_id,
                kind,
                ms,
                pid,
                session,
                n,
                source,
                version,
                cid,
                cname,
                uid,
                uname,
                ext,
                name,
                role,
                cls,
                meta,
                user_key,
                user_source,
            ) = row
            out[room].append(
                Event(
                    event_id=event_id,
                    event_type=kind,
                    at=int(ms),
                    participant_id=pid,
                    room_session_id=session,
                    num_clients=n,
                    source=source,
                    version=int(version),
                    dims=Dims(
                        customer_id=cid,
                        customer_name=cname,
                        user_id=uid,
                        user_name=uname,
                        external_id=ext,
                        display_name=name,
                        role_name=role,
                        role_class=cls,
                        metadata=meta or {},
                        user_key=user_key,
                        user_source=user_source,
                    ),
                )
            )
        return out

    def existing(
        self, table: str, key: str, anchor: str, since: Mapping[str, int | None]
    ) -> dict[str, dict[str, Existing]]:
        """Per room, the live rows of `table` anchored at or after the room's bound."""
        sql = f"""
SELECT room_name, {key}, toUnixTimestamp64Milli({anchor}), row_hash, version
FROM {self.db}.{table} FINAL
WHERE room_name IN {{rooms:Array(String)}} AND {anchor} >= {_SINCE} AND NOT deleted"""
        out: dict[str, dict[str, Existing]] = {room: {} for room in since}
        for room, ident, ms, row_hash, version in self._rows(sql, self._bounds(since), _FINAL):
            out[room][ident] = Existing(int(ms), int(row_hash), int(version))
        return out

    def earlier_connections(
        self, upto: Mapping[str, int], participants: Sequence[str]
    ) -> dict[str, list[tuple[str, ParticipantKey, int]]]:
        """Per room, the stored connections of `participants` anchored at or before the room's moment in
        `upto` (epoch ms): (connection id, participant key, anchor ms). Few rows: rejoins."""
        out: dict[str, list[tuple[str, ParticipantKey, int]]] = {room: [] for room in upto}
        if not upto or not participants:
            return out
        sql = f"""
SELECT room_name, connection_id, participant_id, customer_id, role_class, toUnixTimestamp64Milli(anchor_at)
FROM {self.db}.connection_rows FINAL
WHERE room_name IN {{rooms:Array(String)}} AND participant_id IN {{participants:Array(String)}} AND NOT deleted
  AND anchor_at <= {_SINCE}"""
        params = {**self._bounds(dict(upto)), "participants": list(participants)}
        for room, ident, pid, cid, cls, ms in self._rows(sql, params, _FINAL):
            out[room].append((ident, (pid, cid, cls or "human"), int(ms)))
        return out

    def insert(self, table: str, columns: Sequence[str], rows: list[list[Any]]) -> None:
        if rows:
            self.client.insert(f"{self.db}.{table}", rows, column_names=list(columns))


class VersionClock:
    """Strictly increasing nanosecond versions, never below a floor (the newest version already stored)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self, floor: int = 0) -> int:
        self._last = max(time.time_ns(), self._last + 1, floor + 1)
        return self._last


def plan(store: RoomStore, changed_from: Mapping[str, int]) -> dict[str, int | None]:
    """The part of each room to recompute: its lower bound in epoch ms (None: the whole room)."""
    since: dict[str, int | None] = {}
    found = store.boundaries_before({room: t - ENDED_GRACE_MS for room, t in changed_from.items()})
    for room in changed_from:
        since[room] = found.get(room)
    for _ in range(MAX_EXTENSIONS):
        bounded = {room: s for room, s in since.items() if s is not None}
        if not bounded:
            break
        firsts = store.first_session_events(bounded)
        earlier = {room: t for room, t in firsts.items() if t < (bounded[room] or 0)}
        if not earlier:
            break
        moved = store.boundaries_before(earlier)
        for room in earlier:
            since[room] = moved.get(room)
    return since


def recompute(store: RoomStore, changed_from: Mapping[str, int], clock: VersionClock) -> Outcome:
    """Recompute and write the rows of the given rooms (room → earliest changed event, epoch ms)."""
    outcome = Outcome(rooms=len(changed_from))
    since = plan(store, changed_from)
    events = store.events(since)
    old_connections = store.existing(CONNECTION_ROWS, "connection_id", "anchor_at", since)
    old_sessions = store.existing(SESSION_ROWS, "session_key", "started_at", since)
    floor = max(
        [e.version for rows in (old_connections, old_sessions) for room in rows.values() for e in room.values()],
        default=0,
    )
    version = clock.next(floor)
    connection_rows: list[list[Any]] = []
    session_rows: list[list[Any]] = []
    models: dict[str, RoomModel] = {}
    for room, room_events in events.items():
        outcome.events += len(room_events)
        models[room] = derive(room_events, truncated=since[room] is not None)
    earlier = _earlier_anchors(store, models, since, old_connections)
    for room, model in models.items():
        prev = previous_anchors(model.connections, earlier.get(room))
        connection_rows += _changes(
            [
                (c.connection_id, c.anchor_at, connection_values(room, c, prev[c.connection_id]))
                for c in model.connections
            ],
            old_connections[room],
            model.context_ids,
            version,
            functools.partial(_connection_tombstone, room),
        )
        session_rows += _changes(
            [(s.session_key, s.started_at, session_values(room, s)) for s in model.sessions],
            old_sessions[room],
            model.context_sessions,
            version,
            functools.partial(_session_tombstone, room),
        )
    for table, columns, rows in (
        (CONNECTION_ROWS, CONNECTION_COLUMNS, connection_rows),
        (SESSION_ROWS, SESSION_COLUMNS, session_rows),
    ):
        store.insert(table, columns, rows)
        outcome.deletes[table] = sum(1 for r in rows if r[-1])
        outcome.upserts[table] = len(rows) - outcome.deletes[table]
    return outcome


# Participants per query when looking up earlier connections (bounds the query's parameter size).
_PARTICIPANTS_PER_QUERY = 5000


def _earlier_anchors(
    store: RoomStore,
    models: Mapping[str, RoomModel],
    since: Mapping[str, int | None],
    old_connections: Mapping[str, Mapping[str, Existing]],
) -> dict[str, dict[ParticipantKey, int]]:
    """For the truncated rooms: per participant key, the latest anchor among the stored connections that
    stay as they are and precede the recomputed ones (model §9). A whole room needs none."""
    upto: dict[str, int] = {}
    participants: dict[str, set[str]] = {}
    for room, model in models.items():
        if since[room] is not None and model.connections:
            upto[room] = model.connections[0].anchor_at  # sorted by anchor
            participants[room] = {c.participant_id for c in model.connections}
    out: dict[str, dict[ParticipantKey, int]] = {}
    chunks: list[list[str]] = [[]]
    size = 0
    for room in upto:
        if chunks[-1] and size + len(participants[room]) > _PARTICIPANTS_PER_QUERY:
            chunks.append([])
            size = 0
        chunks[-1].append(room)
        size += len(participants[room])
    for chunk in chunks:
        if not chunk:
            continue
        pids = sorted(set().union(*(participants[room] for room in chunk)))
        found = store.earlier_connections({room: upto[room] for room in chunk}, pids)
        for room, rows in found.items():
            model, old = models[room], old_connections[room]
            recomputed = {c.connection_id for c in model.connections}
            latest = out.setdefault(room, {})
            for ident, key, anchor_ms in rows:
                if ident in recomputed or (ident in old and ident not in model.context_ids):
                    continue  # rewritten or deleted by this pass: not an earlier connection
                if anchor_ms > latest.get(key, anchor_ms - 1):
                    latest[key] = anchor_ms
    return out


def _changes(
    new: Iterable[tuple[str, int, list[Any]]],
    old: Mapping[str, Existing],
    context: set[str],
    version: int,
    tombstone: Callable[[str, int], list[Any]],
) -> list[list[Any]]:
    """Rows to write: new or changed rows, and a deleted row for each old row that is gone or moved month."""
    out: list[list[Any]] = []
    anchors: dict[str, int] = {}
    for key, anchor_ms, values in new:
        anchors[key] = anchor_ms
        row_hash = _hash(values)
        previous = old.get(key)
        if previous is not None and previous.row_hash == row_hash and previous.anchor_ms == anchor_ms:
            continue
        out.append([*values, row_hash, version, 0])
    for key, previous in old.items():
        if key in context:
            continue  # anchored in the context part: not recomputed, not ours to delete
        if key not in anchors or _month(anchors[key]) != _month(previous.anchor_ms):
            out.append([*tombstone(key, previous.anchor_ms), 0, version, 1])
    return out


def _connection_tombstone(room: str, key: str, anchor_ms: int) -> list[Any]:
    values: list[Any] = [None] * (len(CONNECTION_COLUMNS) - 3)
    values[0:4] = [room, key, at(anchor_ms), ""]
    values[CONNECTION_COLUMNS.index("session_via")] = ""
    values[CONNECTION_COLUMNS.index("role_class")] = ""
    values[CONNECTION_COLUMNS.index("metadata")] = {}
    values[CONNECTION_COLUMNS.index("party")] = ""
    values[CONNECTION_COLUMNS.index("end_source")] = ""
    values[CONNECTION_COLUMNS.index("sources")] = ""
    values[CONNECTION_COLUMNS.index("dims_version")] = 0
    return values


def _session_tombstone(room: str, key: str, anchor_ms: int) -> list[Any]:
    values: list[Any] = [0] * (len(SESSION_COLUMNS) - 3)
    values[0:3] = [room, key, at(anchor_ms)]
    for name in (
        "room_session_id",
        "ended_at",
        "customer_id",
        "customer_name",
        "first_host_joined_at",
        "first_guest_joined_at",
    ):
        values[SESSION_COLUMNS.index(name)] = None
    values[SESSION_COLUMNS.index("start_source")] = ""
    values[SESSION_COLUMNS.index("first_event_at")] = at(anchor_ms)
    values[SESSION_COLUMNS.index("last_event_at")] = at(anchor_ms)
    return values


class ChangeLog:
    """Reads `room_changes` after a persisted watermark, handing each note out once per process."""

    def __init__(self, client: Client, database: str) -> None:
        self.client = client
        self.db = database
        self.watermark = 0
        self._seen: dict[tuple[str, int, int], int] = {}

    def load(self) -> None:
        rows = self.client.query(
            f"SELECT toUnixTimestamp64Milli(argMax(marked_at, updated_at)) FROM {self.db}.derive_state "
            "WHERE name = {name:String} GROUP BY name",
            parameters={"name": STATE_NAME},
        ).result_rows
        self.watermark = int(rows[0][0]) if rows else 0

    def pending(self) -> tuple[dict[str, int], int, list[tuple[str, int, int]]]:
        """(room → earliest changed event, the newest note's time, the notes) not yet handed out."""
        rows = self.client.query(
            f"SELECT room_name, toUnixTimestamp64Milli(changed_from), toUnixTimestamp64Milli(marked_at) "
            f"FROM {self.db}.room_changes WHERE marked_at > fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')",
            parameters={"lo": max(0, self.watermark - OVERLAP_MS)},
        ).result_rows
        rooms: dict[str, int] = {}
        notes = []
        newest = self.watermark
        for room, changed, marked in rows:
            note = (room, int(changed), int(marked))
            if note in self._seen:
                continue
            notes.append(note)
            rooms[room] = min(rooms.get(room, note[1]), note[1])
            newest = max(newest, note[2])
        return rooms, newest, notes

    def done(self, notes: Sequence[tuple[str, int, int]], newest: int) -> None:
        """Mark notes handled and persist the watermark (after their rows were written)."""
        for note in notes:
            self._seen[note] = note[2]
        if newest > self.watermark:
            self.watermark = newest
            self.client.insert(
                f"{self.db}.derive_state", [[STATE_NAME, at(newest)]], column_names=["name", "marked_at"]
            )
        horizon = self.watermark - OVERLAP_MS
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v > horizon}

    def backlog(self) -> int:
        """Rooms with notes after the watermark (for the metric and the upgrade's progress)."""
        rows = self.client.query(
            f"SELECT uniqExact(room_name) FROM {self.db}.room_changes "
            "WHERE marked_at > fromUnixTimestamp64Milli({w:Int64}, 'UTC')",
            parameters={"w": self.watermark},
        ).result_rows
        return int(rows[0][0]) if rows else 0


ProgressCallback = Callable[[int, int], None]


def enqueue_all(client: Client, database: str) -> int:
    """Queue every stored room for derivation from its first event (`schema rebuild`); returns the count."""
    client.command(
        f"INSERT INTO {database}.room_changes (room_name, changed_from) "
        f"SELECT room_name, min(created_at) FROM {database}.events WHERE room_name != '' GROUP BY room_name"
    )
    rows = client.query(f"SELECT uniqExact(room_name) FROM {database}.events WHERE room_name != ''").result_rows
    return int(rows[0][0])


def caught_up(client: Client, database: str) -> bool:
    """True when every change noted in `room_changes` is older than the deriver's watermark, i.e. the
    connection and session rows reflect every stored event (for tests, readiness and upgrades)."""
    rows = client.query(
        f"SELECT (SELECT max(marked_at) FROM {database}.room_changes) <= "
        f"(SELECT max(marked_at) FROM {database}.derive_state) OR "
        f"(SELECT count() FROM {database}.room_changes) = 0"
    ).result_rows
    return bool(rows[0][0])


class Deriver:
    """Owns the derivation loop of one sink: `start()`, `run()` until `stop()`, `wake()` after inserts.

    `drain()` is the blocking form for start-up and `schema upgrade`: derive until nothing is pending.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        *,
        poll_s: float = 1.0,
        chunk_rooms: int = 200,
        stale_after_s: float = 6 * 3600,
        census_every_s: float = 60.0,
    ) -> None:
        self.store = RoomStore(client, database)
        self.changes = ChangeLog(client, database)
        self.clock = VersionClock()
        self.poll_s = poll_s
        self.chunk_rooms = chunk_rooms
        self.stale_after_s = stale_after_s
        self.census_every_s = census_every_s
        self._census_at = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="derive")
        # Held for a whole cycle; the writer takes it while it rewrites an erased person's rows, so no
        # cycle can write rows from events it read before that rewrite (sink/forget.py).
        self.lock = threading.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._done.set()  # nothing to wait for until run() starts
        self.progressed_at = time.monotonic()

    def load(self) -> None:
        """Read the persisted watermark (blocking)."""
        self.changes.load()

    def cycle(self, progress: ProgressCallback | None = None) -> Outcome:
        """Derive every room with notes after the watermark (blocking); returns what was written."""
        with self.lock:
            return self._cycle(progress)

    def _cycle(self, progress: ProgressCallback | None) -> Outcome:
        rooms, newest, notes = self.changes.pending()
        total = Outcome()
        metrics.DERIVE_BACKLOG.set(len(rooms))
        if not rooms:
            metrics.DERIVE_LAG.set(0)
            return total
        metrics.DERIVE_LAG.set(max(0.0, time.time() - min(n[2] for n in notes) / 1000))
        started = time.monotonic()
        items = sorted(rooms.items())
        for i in range(0, len(items), self.chunk_rooms):
            total.add(recompute(self.store, dict(items[i : i + self.chunk_rooms]), self.clock))
            if progress:
                progress(min(len(items), i + self.chunk_rooms), len(items))
        self.changes.done(notes, newest)
        metrics.DERIVE_SECONDS.observe(time.monotonic() - started)
        metrics.DERIVE_ROOMS.inc(total.rooms)
        for table in total.upserts:
            metrics.DERIVE_ROWS.labels(table, "upsert").inc(total.upserts[table])
            metrics.DERIVE_ROWS.labels(table, "delete").inc(total.deletes[table])
        metrics.DERIVE_BACKLOG.set(0)
        metrics.DERIVE_LAG.set(0)
        return total

    def census(self) -> tuple[int, int]:
        """Count open connections, and those open longer than `stale_after_s`, into the metrics (blocking).

        Only rows that were open when written are looked at through FINAL, so the check costs what the
        open connections cost, not the table; connections that joined over 92 days ago are not counted.
        """
        self._census_at = time.monotonic()
        db = self.store.db
        sql = f"""
SELECT count(), countIf(joined_at < now64(3) - toIntervalSecond({{stale:UInt32}}))
FROM {db}.{CONNECTION_ROWS} FINAL
WHERE (room_name, connection_id) IN (
        SELECT room_name, connection_id FROM {db}.{CONNECTION_ROWS}
        WHERE end_source = 'open' AND anchor_at >= now64(3) - INTERVAL 92 DAY)
  AND anchor_at >= now64(3) - INTERVAL 92 DAY AND NOT deleted AND end_source = 'open'"""
        rows = self.store.client.query(sql, parameters={"stale": int(self.stale_after_s)}, settings=_FINAL).result_rows
        open_now, stale = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
        metrics.OPEN_CONNECTIONS.set(open_now)
        metrics.STALE_OPEN_CONNECTIONS.set(stale)
        return open_now, stale

    def drain(self, progress: ProgressCallback | None = None) -> Outcome:
        """Derive until nothing is pending (blocking): start-up and `schema upgrade`."""
        total = Outcome()
        while True:
            outcome = self.cycle(progress)
            if not outcome.rooms:
                return total
            total.add(outcome)

    def wake(self) -> None:
        """New events were inserted: derive now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Derive in the background until `stop()`; an unexpected error is logged and retried, never fatal
        to the sink (the rows catch up at the next cycle; the events are safe in `events`)."""
        loop = asyncio.get_running_loop()
        self._done.clear()
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    await loop.run_in_executor(self._pool, self.cycle)
                    if time.monotonic() - self._census_at >= self.census_every_s:
                        await loop.run_in_executor(self._pool, self.census)
                except Exception as exc:  # a store hiccup: keep the loop, report it
                    metrics.DERIVE_FAILURES.inc()
                    log.warning(f"derivation failed, retrying: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(self.poll_s)
                self.progressed_at = time.monotonic()
        finally:
            self._done.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the cycle in hand (bounded); idempotent."""
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout=timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
