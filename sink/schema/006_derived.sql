-- The derived model (issue 12): one final row per connection and per session, recomputed by the sink's
-- deriver (sink/derive.py, rules in sink/model.py and VIEWS.md) for every room whose events changed.
--
-- How a change reaches the deriver: every insert into `events` also writes, through `room_changes_mv`,
-- one row per room it touched with the earliest event time in it. The deriver reads `room_changes` after
-- a watermark it keeps in `derive_state`, recomputes the part of each room that the change can affect
-- (from the moment the room was last known empty before it), and replaces those rows. A crash anywhere
-- in between only repeats the work: the rows are recomputed from `events`, which is the truth.
--
-- `connection_rows` and `session_rows` are ReplacingMergeTree(version, deleted): a recomputation writes
-- a new version of each changed row and a `deleted` row for each row it no longer produces. They are
-- read with FINAL (the views do); each key lives in one partition (a row that moves to another month
-- leaves a `deleted` row behind in the old one), so FINAL never merges across partitions.

-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.room_changes
(
    room_name    String,
    changed_from DateTime64(3, 'UTC'),
    marked_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (marked_at, room_name)
-- A deriver down for longer than this needs `whereby-pipeline schema upgrade --rebuild` (docs/upgrading.md).
TTL toDateTime(marked_at) + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.room_changes_mv TO {db}.room_changes AS
SELECT room_name, min(created_at) AS changed_from
FROM {db}.events
WHERE room_name != ''
GROUP BY room_name;

-- cluster shard key: cityHash64(name)
CREATE TABLE IF NOT EXISTS {db}.derive_state
(
    name       String,
    marked_at  DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;

-- One row per connection. `connection_id` is the event id of its `joined` (of its `left` when the join
-- was lost); `anchor_at` is that event's time and decides the month (partition) and the period a
-- connection counts in.
-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.connection_rows
(
    room_name       String,
    connection_id   String,
    anchor_at       DateTime64(3, 'UTC'),
    participant_id  String,
    session_key     Nullable(String),
    room_session_id Nullable(String),
    session_via     LowCardinality(String),
    customer_id     Nullable(String),
    customer_name   Nullable(String),
    user_id         Nullable(String),
    user_name       Nullable(String),
    external_id     Nullable(String),
    display_name    Nullable(String),
    role_name       LowCardinality(Nullable(String)),
    role_class      LowCardinality(String),
    metadata        Map(String, String),
    joined_at       Nullable(DateTime64(3, 'UTC')),
    left_at         Nullable(DateTime64(3, 'UTC')),
    ended_at        Nullable(DateTime64(3, 'UTC')),
    end_source      LowCardinality(String),
    duration_ms     Nullable(Int64),
    minutes         Nullable(Int64),
    sources         LowCardinality(String),
    dims_version    UInt64,
    row_hash        UInt64,
    version         UInt64,
    deleted         UInt8,
    derived_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(anchor_at)
ORDER BY (room_name, connection_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per room session, with the usage of its connections (computed in the same pass, so a session
-- and its connections never disagree). `session_key` is the roomSessionId, or `started:<event id>` /
-- `ended:<event id>` for a session known only from session events without one.
-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.session_rows
(
    room_name              String,
    session_key            String,
    started_at             DateTime64(3, 'UTC'),
    room_session_id        Nullable(String),
    start_source           LowCardinality(String),
    ended_at               Nullable(DateTime64(3, 'UTC')),
    first_event_at         DateTime64(3, 'UTC'),
    last_event_at          DateTime64(3, 'UTC'),
    customer_id            Nullable(String),
    customer_name          Nullable(String),
    participant_minutes    UInt64,
    recorder_minutes       UInt64,
    streamer_minutes       UInt64,
    assistant_minutes      UInt64,
    captioner_minutes      UInt64,
    connections            UInt64,
    open_connections       UInt64,
    incomplete_connections UInt64,
    estimated_connections  UInt64,
    unique_participants    UInt64,
    unique_recorders       UInt64,
    unique_streamers       UInt64,
    dims_version           UInt64,
    row_hash               UInt64,
    version                UInt64,
    deleted                UInt8,
    derived_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(started_at)
ORDER BY (room_name, session_key)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every accepted raw event, as received (the body the signature covers), so `replay` can re-enrich
-- history the raw topic no longer holds. Small: bodies compress well.
-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.raw_archive
(
    received_at     DateTime64(3, 'UTC'),
    event_id        String,
    event_type      LowCardinality(String),
    room_name       String,
    source          LowCardinality(String),
    body            String CODEC(ZSTD(3)),
    topic_partition UInt32,
    topic_offset    UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
