-- Connection and session aggregates, maintained on every insert into `events` by materialized views.
--
-- Every column is an aggregate that neither order nor repeats can change: min, max, and argMax by a
-- total order (enrichment_version, then created_at, then event id, so ties cannot depend on arrival
-- order). There is no sum or count here: a redelivered event would inflate it. The keys are natural
-- keys (room + participant, room + session), never customer or user: those are carried inside the
-- argMax, so a replay with new dimensions moves usage from one customer to another instead of
-- counting it under both. Only the four documented room event types feed them; other types are kept
-- in `events` but never counted.
--
-- Partitioned by the month of the *event* (`event_month`): a connection's `joined` row lands in its
-- join month, a `left` (or a session end) in the month it happened. A connection therefore has one
-- row per month it has events in, merged at query time. Time-range views read only the months of
-- the range plus one on each side (see 004_views.sql and VIEWS.md for the bound this implies).
--
-- `dims` (customer, user, role ...) is one argMax state of a packed string, keyed by one UInt256:
--   key   = enrichment_version · 2^128 + created_at (epoch ms) · 2^64 + cityHash64(event_id)
--           (the same total order as the tuple (enrichment_version, created_at, event id), but a
--           fixed-width number: argMax over a Tuple key/value is ~15x slower to merge),
--   value = the fields below joined by U+001F, each '' for NULL or '=' followed by the value
--           (a U+001F inside a value is replaced by a space). The views decode it.
-- Connection fields: customer_id, customer_name, user_id, external_id, display_name, role_name,
-- role_class. Session fields: customer_id, customer_name.
--
-- In the materialized views below, `x != ''` filters on the `ifNull(x, '')` alias on purpose: ClickHouse resolves a
-- WHERE name to the SELECT alias, so `x IS NOT NULL` would test the alias and let NULLs through.

-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.connection_states
(
    room_name       String,
    participant_id  String,
    event_month     Date32,
    joined_at       SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    left_at         SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    room_session_id SimpleAggregateFunction(max, Nullable(String)),
    dims_version    SimpleAggregateFunction(max, UInt64),
    dims            AggregateFunction(argMax, String, UInt256)
)
ENGINE = AggregatingMergeTree
PARTITION BY event_month
ORDER BY (room_name, participant_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.connection_states_mv TO {db}.connection_states AS
SELECT
    room_name,
    ifNull(participant_id, '') AS participant_id,
    makeDate32(toYear(created_at), toMonth(created_at), 1) AS event_month,
    min(if(event_type = 'room.client.joined', created_at, NULL)) AS joined_at,
    max(if(event_type = 'room.client.left', created_at, NULL)) AS left_at,
    max(room_session_id) AS room_session_id,
    max(enrichment_version) AS dims_version,
    argMaxState(
        arrayStringConcat(
            arrayMap(x -> ifNull(concat('=', replaceAll(x, '\x1f', ' ')), ''),
                     [customer_id, customer_name, user_id, external_id, display_name, role_name, role_class]),
            '\x1f'),
        reinterpretAsUInt256(concat(
            reinterpretAsFixedString(cityHash64(event_id)),
            reinterpretAsFixedString(toUnixTimestamp64Milli(created_at)),
            reinterpretAsFixedString(enrichment_version),
            toFixedString('\0\0\0\0\0\0\0\0', 8)))) AS dims
FROM {db}.events
WHERE event_type IN ('room.client.joined', 'room.client.left') AND participant_id != ''
GROUP BY room_name, participant_id, event_month;

-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.session_states
(
    room_name       String,
    room_session_id String,
    event_month     Date32,
    started_at      SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    ended_at        SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    first_seen_at   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen_at    SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    dims_version    SimpleAggregateFunction(max, UInt64),
    dims            AggregateFunction(argMax, String, UInt256)
)
ENGINE = AggregatingMergeTree
PARTITION BY event_month
ORDER BY (room_name, room_session_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.session_states_mv TO {db}.session_states AS
SELECT
    room_name,
    ifNull(room_session_id, '') AS room_session_id,
    makeDate32(toYear(created_at), toMonth(created_at), 1) AS event_month,
    min(if(event_type = 'room.session.started', created_at, NULL)) AS started_at,
    max(if(event_type = 'room.session.ended', created_at, NULL)) AS ended_at,
    min(created_at) AS first_seen_at,
    max(created_at) AS last_seen_at,
    max(enrichment_version) AS dims_version,
    argMaxState(
        arrayStringConcat(
            arrayMap(x -> ifNull(concat('=', replaceAll(x, '\x1f', ' ')), ''), [customer_id, customer_name]),
            '\x1f'),
        reinterpretAsUInt256(concat(
            reinterpretAsFixedString(cityHash64(event_id)),
            reinterpretAsFixedString(toUnixTimestamp64Milli(created_at)),
            reinterpretAsFixedString(enrichment_version),
            toFixedString('\0\0\0\0\0\0\0\0', 8)))) AS dims
FROM {db}.events
WHERE event_type IN ('room.client.joined', 'room.client.left', 'room.session.started', 'room.session.ended')
  AND room_session_id != ''
GROUP BY room_name, room_session_id, event_month;
