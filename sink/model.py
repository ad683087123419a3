"""The minute model: one room's events → its connections and sessions. Pure: no I/O, no clock.

Every rule here is written down, with a worked example, in `sink/VIEWS.md` ("How a minute is decided");
the section numbers in the comments below point there. In short:

1. A connection is a `room.client.joined` paired with the next `room.client.left` of the same
   participant by time (§1). A webhook and an event synthesized from Whereby's Insights for the same
   edge of a connection are one event, the webhook winning (§1b).
2. It belongs to the session named on its events; else the session running at its join; else the first
   session that started after its join before the room was next known empty (§2). Session events
   without a `roomSessionId` belong to the session running at that moment (§2b).
3. Without its `left` it ends at its session's end; else at the last event of the room before the room
   was next known empty (estimated: a lower bound); else it is open and adds nothing; and never after
   the same participant's next join (then: the last event before that join, estimated) (§3). A `left`
   without its `joined` is incomplete and adds nothing (§4).
4. Minutes are the duration rounded up to whole minutes, per connection (§5).
5. Each human connection is a host's (roles `host`, `owner`, `member`) or a guest's (every other human
   role); a session knows when its first host and its first guest joined (§8).
6. Each connection knows when the same participant's previous connection in the room (same customer,
   same role class) was anchored, so a range counts its distinct participants without a set (§9).

The function is deterministic in the *set* of events it is given: duplicates (same event id) and any
delivery order give identical output, which is what makes the derived tables idempotent.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

JOINED = "room.client.joined"
LEFT = "room.client.left"
STARTED = "room.session.started"
ENDED = "room.session.ended"
CLIENT_EDGES = (JOINED, LEFT)

SOURCE_WEBHOOK = "webhook"
SOURCE_INSIGHTS = "insights"

# Same-instant events sort so that a zero-length connection is joined before it is left, a session
# starts before anything else happens in it and ends after everything else at that instant.
_RANK = {JOINED: 0, STARTED: 1, LEFT: 3, ENDED: 4}
_OTHER_RANK = 2

# A synthesized (Insights) edge is the same edge as a webhook of the same kind this close in time (§1b):
# Insights' times and webhook `createdAt`s of one connection differ by seconds, never by minutes.
SYNTHETIC_MATCH_MS = 5 * 60 * 1000

# §8: the roles that enter with a host's rights: the host URL (`roomKey`), or an account of the
# company's Whereby organisation. Every other human role (visitor, viewer, granted_*, unknown, missing)
# is a guest; the bots are neither.
HOST_ROLES = frozenset({"host", "owner", "member"})
PARTY_HOST = "host"
PARTY_GUEST = "guest"
PARTY_BOT = "bot"

MS_PER_MINUTE = 60_000
# How long after a session's last event an id-less `session.ended` may still end it (§2b): Whereby ends a
# session "a while" after fewer than two remain, minutes in practice; an hour is generous and bounded.
ENDED_GRACE_MS = 60 * 60 * 1000


# The records below are plain slotted dataclasses, not frozen ones: a derivation builds one Event per stored
# event and one Connection per connection, and frozen construction (object.__setattr__ per field) was a
# tenth of a rebuild's time. Treat them as immutable all the same.


@dataclass(slots=True)
class Dims:
    """What enrichment attached to an event: who it belongs to and how it is labelled."""

    customer_id: str | None = None
    customer_name: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    external_id: str | None = None
    display_name: str | None = None
    role_name: str | None = None
    role_class: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The user id USER_ID_SOURCE chose (externalId or a metadata value) and where it came from (§6).
    user_key: str | None = None
    user_source: str | None = None


def party_of(role_name: str | None, role_class: str | None) -> str:
    """§8: `host`, `guest` or `bot` for a connection's role (a missing class is human)."""
    if (role_class or "human") != "human":
        return PARTY_BOT
    return PARTY_HOST if role_name in HOST_ROLES else PARTY_GUEST


@dataclass(slots=True)
class Event:
    """One stored event of a room (one row per event id: the newest enrichment)."""

    event_id: str
    event_type: str
    at: int  # createdAt, epoch milliseconds
    participant_id: str | None = None
    room_session_id: str | None = None
    num_clients: int | None = None
    source: str = SOURCE_WEBHOOK
    version: int = 0  # enrichment_version: the newest enrichment of a connection decides its dims
    dims: Dims = field(default_factory=Dims)

    @property
    def key(self) -> tuple[int, int, str]:
        """The total order of a room's events: time, then kind (see `_RANK`), then event id."""
        return (self.at, _RANK.get(self.event_type, _OTHER_RANK), self.event_id)

    @property
    def newness(self) -> tuple[int, int, str]:
        """Which event's enrichment wins: the newest enrichment, then the latest event."""
        return (self.version, self.at, self.event_id)


@dataclass(slots=True)
class Connection:
    """One stay of one participant in the room (a row of `connection_rows`)."""

    connection_id: str  # the event id of its `joined` (or of its `left` when the join was lost)
    participant_id: str
    anchor_at: int  # joined_at, or left_at for an incomplete connection: decides its month
    session_key: str | None
    room_session_id: str | None
    session_via: str  # event | running | next | none (§2)
    joined_at: int | None
    left_at: int | None
    ended_at: int | None
    end_source: str  # left | session_end | estimated | open | no_join
    duration_ms: int | None
    minutes: int | None
    sources: str  # webhook | insights | mixed: where its edges came from
    dims_version: int
    dims: Dims

    @property
    def party(self) -> str:
        """§8: whether this is a host's, a guest's or a bot's connection."""
        return party_of(self.dims.role_name, self.dims.role_class)


@dataclass(slots=True)
class Usage:
    """Totals over a set of connections, the way every usage result reports them."""

    participant_minutes: int = 0  # role class `human`
    recorder_minutes: int = 0
    streamer_minutes: int = 0
    assistant_minutes: int = 0
    captioner_minutes: int = 0
    connections: int = 0  # closed connections (left, session_end or estimated): the ones with minutes
    open_connections: int = 0
    incomplete_connections: int = 0
    estimated_connections: int = 0
    unique_participants: int = 0  # distinct human participant ids
    unique_recorders: int = 0
    unique_streamers: int = 0


def usage_of(connections: Iterable[Connection]) -> Usage:
    """Sum a set of connections: minutes by role class, and how many are closed, open, incomplete."""
    minutes = dict.fromkeys(("human", "recorder", "streamer", "assistant", "captioner"), 0)
    counts = dict.fromkeys(("closed", "open", "no_join", "estimated"), 0)
    people: dict[str, set[str]] = {"human": set(), "recorder": set(), "streamer": set()}
    for c in connections:
        role = c.dims.role_class or "human"
        minutes[role] = minutes.get(role, 0) + (c.minutes or 0)
        if c.end_source in ("open", "no_join"):
            counts[c.end_source] += 1
        else:
            counts["closed"] += 1
            counts["estimated"] += c.end_source == "estimated"
        if role in people:
            people[role].add(c.participant_id)
    return Usage(
        participant_minutes=minutes["human"],
        recorder_minutes=minutes["recorder"],
        streamer_minutes=minutes["streamer"],
        assistant_minutes=minutes["assistant"],
        captioner_minutes=minutes["captioner"],
        connections=counts["closed"],
        open_connections=counts["open"],
        incomplete_connections=counts["no_join"],
        estimated_connections=counts["estimated"],
        unique_participants=len(people["human"]),
        unique_recorders=len(people["recorder"]),
        unique_streamers=len(people["streamer"]),
    )


@dataclass(slots=True)
class Session:
    """One room session (a row of `session_rows`). Anonymous sessions (a `session.started` without an
    id that matches no known session) are keyed by that event's id and have no `room_session_id`."""

    session_key: str
    room_session_id: str | None
    started_at: int
    start_source: str  # started (a room.session.started) | first_event (the first event seen in it)
    ended_at: int | None
    first_event_at: int
    last_event_at: int
    dims_version: int
    dims: Dims
    usage: Usage = field(default_factory=Usage)
    arrivals: Arrivals = field(default_factory=lambda: Arrivals())


@dataclass(frozen=True, slots=True)
class Arrivals:
    """§8: when a session's first host and first guest joined (None: none joined, or their joins were lost)."""

    first_host_joined_at: int | None = None
    first_guest_joined_at: int | None = None


def arrivals_of(connections: Iterable[Connection]) -> Arrivals:
    """The first join of a host and of a guest among `connections` (connections whose join was lost
    say nothing about arrival)."""
    first: dict[str, int] = {}
    for c in connections:
        if c.joined_at is not None:
            party = c.party
            if party != PARTY_BOT and (party not in first or c.joined_at < first[party]):
                first[party] = c.joined_at
    return Arrivals(first.get(PARTY_HOST), first.get(PARTY_GUEST))


@dataclass
class RoomModel:
    """What `derive` computes for one room (for a truncated room: for its episodes after the first).

    `context_ids` are the ids of the events that were context only (the first episode of a truncated
    room): connections anchored on them and sessions made only of them were not derived.
    """

    connections: list[Connection]
    sessions: list[Session]
    context_ids: set[str] = field(default_factory=set)
    context_sessions: set[str] = field(default_factory=set)


# A participant's previous connection is looked up by (participant id, customer id, role class).
ParticipantKey = tuple[str, str | None, str]


def participant_key(c: Connection) -> ParticipantKey:
    """The key `previous_anchors` follows a participant by (§9)."""
    return (c.participant_id, c.dims.customer_id, c.dims.role_class or "human")


def previous_anchors(
    connections: Iterable[Connection], earlier: Mapping[ParticipantKey, int] | None = None
) -> dict[str, int | None]:
    """§9: per connection id, the anchor of the same participant's previous connection in the room under
    the same customer and role class (None: it is their first), in (anchor, connection id) order.

    `earlier` holds, per key, the latest anchor of the stored connections that precede these (the part
    of a truncated room that is not recomputed). A range [from, to) then has exactly as many distinct
    participants as connections anchored in it whose previous anchor is None or before `from`.
    """
    last: dict[ParticipantKey, int] = dict(earlier or {})
    out: dict[str, int | None] = {}
    for c in sorted(connections, key=lambda c: (c.anchor_at, c.connection_id)):
        key = participant_key(c)
        out[c.connection_id] = last.get(key)
        last[key] = c.anchor_at
    return out


def minutes_of(duration_ms: int) -> int:
    """Whereby's rule (§5): a connection's duration rounded up to whole minutes (0 ms is 0 minutes)."""
    return -(-max(0, duration_ms) // MS_PER_MINUTE)


def is_boundary_after(e: Event) -> bool:
    """The room is known empty at this event: a client event leaving `numClients = 0` (§2)."""
    return e.event_type in CLIENT_EDGES and e.num_clients == 0


def is_boundary_before(e: Event) -> bool:
    """The room was known empty just before this event: a `joined` with `numClients = 1` (§2)."""
    return e.event_type == JOINED and e.num_clients == 1


def dedupe(events: Iterable[Event]) -> list[Event]:
    """One event per id (the newest enrichment), in the room's total order."""
    best: dict[str, Event] = {}
    for e in events:
        old = best.get(e.event_id)
        if old is None or e.newness > old.newness:
            best[e.event_id] = e
    return sorted(best.values(), key=lambda e: e.key)


@dataclass
class _Episode:
    """The stretch of a room's timeline between two moments it was known empty."""

    index: int
    events: list[Event] = field(default_factory=list)
    # Set when the room became known empty after this episode: the time, and the last event of the
    # room strictly before that moment (the estimate of §3).
    empty_at: int | None = None
    last_before_empty: Event | None = None


def _episodes(events: Sequence[Event], *, truncated: bool) -> tuple[list[_Episode], dict[str, int]]:
    """Split the ordered events at every known-empty moment; returns the episodes and event id → index.

    `truncated`: the events start mid-room (earlier events exist but were not loaded), so a join with
    `numClients = 1` first in the list still starts a new episode.
    """
    episodes = [_Episode(0)]
    of: dict[str, int] = {}
    pending_close = False
    for e in events:
        current = episodes[-1]
        if pending_close or (is_boundary_before(e) and (current.events or (truncated and current.index == 0))):
            if not pending_close:  # known empty just before `e`: the last event of the episode is the estimate
                current.empty_at = e.at
                current.last_before_empty = current.events[-1] if current.events else None
            current = _Episode(current.index + 1)
            episodes.append(current)
            pending_close = False
        current.events.append(e)
        of[e.event_id] = current.index
        if is_boundary_after(e):
            current.empty_at = e.at
            # Strictly before the emptying event: its own time could lie after the participant left.
            current.last_before_empty = current.events[-2] if len(current.events) > 1 else None
            pending_close = True
    return episodes, of


@dataclass
class _SessionAcc:
    key: str
    room_session_id: str | None
    started_at: int | None = None
    ended_at: int | None = None
    first_event_at: int | None = None
    last_event_at: int | None = None
    newest: Event | None = None
    event_ids: list[str] = field(default_factory=list)
    # The moment it cannot be running any more without an end event: the room was known empty after it.
    empty_after: int | None = None

    def add(self, e: Event) -> None:
        self.event_ids.append(e.event_id)
        self.first_event_at = e.at if self.first_event_at is None else min(self.first_event_at, e.at)
        self.last_event_at = e.at if self.last_event_at is None else max(self.last_event_at, e.at)
        if e.event_type == STARTED:
            self.started_at = e.at if self.started_at is None else min(self.started_at, e.at)
        elif e.event_type == ENDED:
            self.ended_at = e.at if self.ended_at is None else max(self.ended_at, e.at)
        if self.newest is None or e.newness > self.newest.newness:
            self.newest = e

    @property
    def start(self) -> int:
        assert self.first_event_at is not None
        return self.first_event_at if self.started_at is None else min(self.started_at, self.first_event_at)

    def running_until(self) -> int | None:
        """End of the interval in which the session counts as running (None: still running)."""
        if self.ended_at is not None:
            return self.ended_at
        return self.empty_after


class _Sessions:
    """A room's sessions, and the attribution rules of §2 over them."""

    def __init__(self) -> None:
        self.by_key: dict[str, _SessionAcc] = {}

    def get(self, key: str, room_session_id: str | None) -> _SessionAcc:
        acc = self.by_key.get(key)
        if acc is None:
            acc = self.by_key[key] = _SessionAcc(key, room_session_id)
        return acc

    def settle(self, empty_times: Sequence[int]) -> None:
        """Without an end event a session cannot outlive the moment the room was next known empty."""
        for s in self.by_key.values():
            s.empty_after = None
            if s.ended_at is None and s.last_event_at is not None:
                i = bisect.bisect_left(empty_times, s.last_event_at)
                s.empty_after = empty_times[i] if i < len(empty_times) else None

    def ending_at(self, at: int) -> _SessionAcc | None:
        """The session an id-less `session.ended` at `at` ends (§2b), if any."""
        candidates = [
            s
            for s in self.by_key.values()
            if s.start <= at
            and (
                (s.running_until() is None or at <= (s.running_until() or 0))
                or (s.ended_at is None and s.last_event_at is not None and at - s.last_event_at <= ENDED_GRACE_MS)
            )
        ]
        unended = [s for s in candidates if s.ended_at is None]
        return max(unended or candidates, key=lambda s: (s.start, s.key), default=None)

    def running_at(self, at: int) -> _SessionAcc | None:
        """The session running at `at` (the latest started, if several)."""
        best: _SessionAcc | None = None
        for s in self.by_key.values():
            until = s.running_until()
            if s.start <= at and (until is None or at <= until) and (best is None or _later(s, best)):
                best = s
        return best

    def next_after(self, at: int, before: int | None) -> _SessionAcc | None:
        """The first session that started after `at` and before `before` (None: no bound)."""
        best: _SessionAcc | None = None
        for s in self.by_key.values():
            if s.start > at and (before is None or s.start < before) and (best is None or _earlier(s, best)):
                best = s
        return best

    def attribute(self, at: int, episode: _Episode) -> tuple[_SessionAcc | None, str]:
        """§2: running at `at`, else the first started after it before the room was next known empty."""
        running = self.running_at(at)
        if running is not None:
            return running, "running"
        following = self.next_after(at, episode.empty_at)
        if following is not None:
            return following, "next"
        return None, "none"


def _later(a: _SessionAcc, b: _SessionAcc) -> bool:
    return (a.start, a.key) > (b.start, b.key)


def _earlier(a: _SessionAcc, b: _SessionAcc) -> bool:
    return (a.start, a.key) < (b.start, b.key)


@dataclass
class _Edge:
    """A joined or left of one participant, after merging a webhook and its synthesized twin (§1b)."""

    kind: str
    at: int
    events: list[Event]


def _edges(events: Sequence[Event]) -> list[_Edge]:
    """One participant's joins and lefts, in order, with each synthesized twin folded into its webhook."""
    edges: list[_Edge] = []
    for e in events:
        last = edges[-1] if edges else None
        if (
            last is not None
            and last.kind == e.event_type
            and abs(e.at - last.at) <= SYNTHETIC_MATCH_MS
            and (e.source == SOURCE_INSIGHTS or all(x.source == SOURCE_INSIGHTS for x in last.events))
        ):
            last.events.append(e)
            # The webhook's time wins over Insights' for the same edge.
            webhooks = [x.at for x in last.events if x.source != SOURCE_INSIGHTS]
            last.at = min(webhooks) if webhooks else min(x.at for x in last.events)
            continue
        edges.append(_Edge(e.event_type, e.at, [e]))
    return edges


def _pairs(edges: Sequence[_Edge]) -> list[tuple[_Edge | None, _Edge | None, _Edge | None]]:
    """§1: each joined with the next left by time; a joined followed by another joined lost its left, a
    left without a joined before it lost its join. The third item is, for a joined that lost its left,
    the same participant's next joined (§3: the connection ended before it)."""
    out: list[tuple[_Edge | None, _Edge | None, _Edge | None]] = []
    open_join: _Edge | None = None
    for edge in edges:
        if edge.kind == JOINED:
            if open_join is not None:
                out.append((open_join, None, edge))
            open_join = edge
        elif open_join is not None:
            out.append((open_join, edge, None))
            open_join = None
        else:
            out.append((None, edge, None))
    if open_join is not None:
        out.append((open_join, None, None))
    return out


def _newest(events: Iterable[Event]) -> Event:
    return max(events, key=lambda e: e.newness)


def derive(events: Iterable[Event], *, truncated: bool = False) -> RoomModel:
    """The connections and sessions of one room, from its events (any order, duplicates allowed).

    `truncated=True` means the events start at a moment the room was known empty but earlier events
    exist: the first episode (up to and including that moment) is context only, and nothing of it is
    returned. The caller then replaces exactly the rows of the returned episodes.
    """
    ordered = dedupe(events)
    episodes, episode_of = _episodes(ordered, truncated=truncated)
    skipped = {e.event_id for e in episodes[0].events} if truncated else set()

    sessions = _Sessions()
    # §2: sessions named on events, with their started/ended events and every event carrying the id.
    for e in ordered:
        if e.room_session_id:
            sessions.get(e.room_session_id, e.room_session_id).add(e)
    empty_times = sorted(ep.empty_at for ep in episodes if ep.empty_at is not None)
    sessions.settle(empty_times)
    # §2b: a session.started without an id belongs to the session running then (or starting next before
    # the room is next empty); if there is none it starts a session of its own, keyed by the event.
    for e in ordered:
        if e.event_type == STARTED and not e.room_session_id:
            found, _ = sessions.attribute(e.at, episodes[episode_of[e.event_id]])
            (found or sessions.get("started:" + e.event_id, None)).add(e)
    sessions.settle(empty_times)
    # A session.ended without an id ends the session running then (§2b). It usually comes a while after
    # the room emptied, so "running" also takes the latest started session without an end of its own
    # whose last event is at most ENDED_GRACE_MS earlier; anything older is another meeting's session.
    for e in ordered:
        if e.event_type == ENDED and not e.room_session_id:
            pick = sessions.ending_at(e.at)
            (pick or sessions.get("ended:" + e.event_id, None)).add(e)
    sessions.settle(empty_times)

    by_participant: dict[str, list[Event]] = {}
    for e in ordered:
        if e.event_type in CLIENT_EDGES and e.participant_id:
            by_participant.setdefault(e.participant_id, []).append(e)

    times = [e.at for e in ordered]
    connections: list[Connection] = []
    for participant, own in by_participant.items():
        for join, left, rejoin in _pairs(_edges(own)):
            cap = None if rejoin is None else _last_event_before(ordered, times, rejoin.at)
            connection = _connection(participant, join, left, cap, sessions, episodes, episode_of)
            if connection.connection_id not in skipped:
                connections.append(connection)

    of_session: dict[str, list[Connection]] = {}
    for c in connections:
        if c.session_key is not None:
            of_session.setdefault(c.session_key, []).append(c)
    out_sessions, context_sessions = [], set()
    for s in sessions.by_key.values():
        if any(i not in skipped for i in s.event_ids):
            members = of_session.get(s.key, [])
            out_sessions.append(_session(s, usage_of(members), arrivals_of(members)))
        else:
            context_sessions.add(s.key)
    connections.sort(key=lambda c: (c.anchor_at, c.connection_id))
    out_sessions.sort(key=lambda s: (s.started_at, s.session_key))
    return RoomModel(connections, out_sessions, skipped, context_sessions)


def _last_event_before(ordered: Sequence[Event], times: Sequence[int], at: int) -> int | None:
    """The time of the room's last event strictly before `at` (None: there is none)."""
    i = bisect.bisect_left(times, at)
    return ordered[i - 1].at if i > 0 else None


def _connection(
    participant: str,
    join: _Edge | None,
    left: _Edge | None,
    cap: int | None,
    sessions: _Sessions,
    episodes: Sequence[_Episode],
    episode_of: Mapping[str, int],
) -> Connection:
    edges = [x for x in (join, left) if x is not None]
    events = [e for edge in edges for e in edge.events]
    newest = _newest(events)
    anchor_edge = join if join is not None else left
    assert anchor_edge is not None
    anchor_event = min(
        (e for e in anchor_edge.events if e.source != SOURCE_INSIGHTS), key=lambda e: e.key, default=None
    ) or min(anchor_edge.events, key=lambda e: e.key)
    episode = episodes[episode_of[anchor_event.event_id]]

    # §2: the session named on any of its events (the join's first), else by time.
    named = next((e.room_session_id for e in events if e.room_session_id), None)
    session: _SessionAcc | None
    if named is not None:
        session, via = sessions.by_key[named], "event"
    else:
        session, via = sessions.attribute(anchor_edge.at, episode)

    joined_at = join.at if join is not None else None
    left_at = left.at if left is not None else None
    ended_at: int | None
    if join is None:
        ended_at, end_source = None, "no_join"  # §4: incomplete, adds nothing
    elif left is not None:
        ended_at, end_source = left.at, "left"
    elif session is not None and session.ended_at is not None and session.ended_at >= join.at:
        ended_at, end_source = session.ended_at, "session_end"  # §3
    elif episode.empty_at is not None:
        # §3: the last event of the room before it was next known empty, never before the join itself.
        last = episode.last_before_empty
        ended_at, end_source = max(join.at, last.at if last is not None else join.at), "estimated"
    else:
        ended_at, end_source = None, "open"
    if join is not None and left is None and cap is not None and (ended_at is None or ended_at > cap):
        # §3: the same participant joined again, so this stay ended before that join; its lost `left` is
        # estimated, like a room known empty, by the last event of the room before the rejoin (never
        # before its own join). Without this the stay would overlap the rejoin and be charged twice.
        ended_at, end_source = max(join.at, cap), "estimated"
    duration = None if ended_at is None or joined_at is None else max(0, ended_at - joined_at)
    kinds = {e.source == SOURCE_INSIGHTS for e in events}
    return Connection(
        connection_id=anchor_event.event_id,
        participant_id=participant,
        anchor_at=anchor_edge.at,
        session_key=session.key if session is not None else None,
        room_session_id=session.room_session_id if session is not None else None,
        session_via=via if session is not None else "none",
        joined_at=joined_at,
        left_at=left_at,
        ended_at=ended_at,
        end_source=end_source,
        duration_ms=duration,
        minutes=None if duration is None else minutes_of(duration),
        sources="mixed" if len(kinds) == 2 else (SOURCE_INSIGHTS if True in kinds else SOURCE_WEBHOOK),
        dims_version=newest.version,
        dims=newest.dims,
    )


def _session(s: _SessionAcc, usage: Usage, arrivals: Arrivals) -> Session:
    assert s.newest is not None and s.first_event_at is not None and s.last_event_at is not None
    return Session(
        session_key=s.key,
        room_session_id=s.room_session_id,
        # Whereby's own statement of the start when it arrived; else the first event seen in the session.
        # (For deciding what was running when, `start` also takes an earlier event carrying its id.)
        started_at=s.started_at if s.started_at is not None else s.first_event_at,
        start_source="started" if s.started_at is not None else "first_event",
        ended_at=s.ended_at,
        first_event_at=s.first_event_at,
        last_event_at=s.last_event_at,
        dims_version=s.newest.version,
        dims=s.newest.dims,
        usage=usage,
        arrivals=arrivals,
    )
