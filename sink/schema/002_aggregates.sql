-- Connection and session aggregates, maintained on every insert into `events` by materialized views.
--
-- Every column is an aggregate that neither order nor repeats can change: min, max, and argMax by a
-- total order (enrichment_version, then created_at, then event_id, so ties cannot depend on arrival
-- order). There is no sum or count here: a redelivered event would inflate it. The keys are natural
-- keys (room + participant, room + session), never customer or user: those are carried inside the
-- argMax, so a replay with new dimensions moves usage from one customer to another instead of
-- counting it under both. Only the four documented room event types feed them; other types are kept
-- in `events` but never counted.
--
-- In the materialized views below, `x != ''` filters on the `ifNull(x, '')` alias on purpose: ClickHouse resolves a
-- WHERE name to the SELECT alias, so `x IS NOT NULL` would test the alias and let NULLs through.

-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.connection_states
(
    room_name       String,
    participant_id  String,
    joined_at       SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    left_at         SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    room_session_id SimpleAggregateFunction(max, Nullable(String)),
    dims_version    SimpleAggregateFunction(max, UInt64),
    dims            AggregateFunction(
                        argMax,
                        Tuple(
                            customer_id Nullable(String),
                            customer_name Nullable(String),
                            user_id Nullable(String),
                            external_id Nullable(String),
                            display_name Nullable(String),
                            role_name Nullable(String),
                            role_class Nullable(String)),
                        Tuple(UInt64, DateTime64(3, 'UTC'), String))
)
ENGINE = AggregatingMergeTree
ORDER BY (room_name, participant_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.connection_states_mv TO {db}.connection_states AS
SELECT
    room_name,
    ifNull(participant_id, '') AS participant_id,
    min(if(event_type = 'room.client.joined', created_at, NULL)) AS joined_at,
    max(if(event_type = 'room.client.left', created_at, NULL)) AS left_at,
    max(room_session_id) AS room_session_id,
    max(enrichment_version) AS dims_version,
    argMaxState(
        CAST((customer_id, customer_name, user_id, external_id, display_name, role_name, role_class),
             'Tuple(customer_id Nullable(String), customer_name Nullable(String), user_id Nullable(String), external_id Nullable(String), display_name Nullable(String), role_name Nullable(String), role_class Nullable(String))'),
        (enrichment_version, created_at, event_id)) AS dims
FROM {db}.events
WHERE event_type IN ('room.client.joined', 'room.client.left') AND participant_id != ''
GROUP BY room_name, participant_id;

-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.session_states
(
    room_name       String,
    room_session_id String,
    started_at      SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    ended_at        SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    first_seen_at   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen_at    SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    dims_version    SimpleAggregateFunction(max, UInt64),
    dims            AggregateFunction(
                        argMax,
                        Tuple(customer_id Nullable(String), customer_name Nullable(String)),
                        Tuple(UInt64, DateTime64(3, 'UTC'), String))
)
ENGINE = AggregatingMergeTree
ORDER BY (room_name, room_session_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.session_states_mv TO {db}.session_states AS
SELECT
    room_name,
    ifNull(room_session_id, '') AS room_session_id,
    min(if(event_type = 'room.session.started', created_at, NULL)) AS started_at,
    max(if(event_type = 'room.session.ended', created_at, NULL)) AS ended_at,
    min(created_at) AS first_seen_at,
    max(created_at) AS last_seen_at,
    max(enrichment_version) AS dims_version,
    argMaxState(
        CAST((customer_id, customer_name), 'Tuple(customer_id Nullable(String), customer_name Nullable(String))'),
        (enrichment_version, created_at, event_id)) AS dims
FROM {db}.events
WHERE event_type IN ('room.client.joined', 'room.client.left', 'room.session.started', 'room.session.ended')
  AND room_session_id != ''
GROUP BY room_name, room_session_id;
