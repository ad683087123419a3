-- Events: one row per Whereby event id, the newest enrichment winning.
--
-- The sink inserts the enriched JSON records as they are (JSONEachRow) into `events_input`, a Null
-- table that stores nothing; its materialized view turns them into `events` rows. That keeps the
-- per-row work inside ClickHouse (no Python conversion) and lets ClickHouse reject a malformed record,
-- which the sink then isolates by splitting the batch.

CREATE TABLE IF NOT EXISTS {db}.events_input
(
    event_id            String,
    event_type          String,
    api_version         String,
    created_at_ms       Int64,
    received_at_ms      Int64,
    room_name           String,
    meeting_id          Nullable(String),
    subdomain           Nullable(String),
    room_session_id     Nullable(String),
    participant_id      Nullable(String),
    display_name        Nullable(String),
    role_name           Nullable(String),
    role_class          Nullable(String),
    external_id         Nullable(String),
    metadata            Map(String, String),
    metadata_raw        Nullable(String),
    is_dial_in          Bool,
    num_clients         Nullable(UInt32),
    customer_id         Nullable(String),
    customer_name       Nullable(String),
    customer_resolution String,
    user_id             Nullable(String),
    user_resolution     String,
    dimension_version   UInt64,
    enrichment_version  UInt64,
    enriched_at_ms      Int64,
    -- A record missing one of these is rejected (and dead-lettered), never stored with a made-up value.
    CONSTRAINT has_event_id CHECK event_id != '',
    CONSTRAINT has_event_type CHECK event_type != '',
    CONSTRAINT has_enrichment_version CHECK enrichment_version > 0,
    -- 2000-01-01 .. 2200-01-01: a createdAt outside is garbage and would create a stray partition.
    CONSTRAINT sane_created_at CHECK created_at_ms BETWEEN 946684800000 AND 7258118400000
)
ENGINE = Null;

-- cluster shard key: cityHash64(room_name)
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id            String,
    event_type          LowCardinality(String),
    api_version         LowCardinality(String),
    created_at          DateTime64(3, 'UTC'),
    received_at         DateTime64(3, 'UTC'),
    room_name           String,
    meeting_id          Nullable(String),
    subdomain           LowCardinality(Nullable(String)),
    room_session_id     Nullable(String),
    participant_id      Nullable(String),
    display_name        Nullable(String),
    role_name           LowCardinality(Nullable(String)),
    role_class          LowCardinality(Nullable(String)),
    external_id         Nullable(String),
    metadata            Map(String, String),
    metadata_raw        Nullable(String),
    is_dial_in          Bool,
    num_clients         Nullable(UInt32),
    customer_id         Nullable(String),
    customer_name       Nullable(String),
    customer_resolution LowCardinality(String),
    user_id             Nullable(String),
    user_resolution     LowCardinality(String),
    dimension_version   UInt64,
    enrichment_version  UInt64,
    enriched_at         DateTime64(3, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    -- customer_id changes when a replay re-enriches an event, so it cannot be in the sorting key (the
    -- key is what ReplacingMergeTree deduplicates on); a skip index serves per-customer filters.
    INDEX customer_idx customer_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(enrichment_version)
PARTITION BY toYYYYMM(created_at)
-- Only what never changes for an event id: room names start with the customer's prefix, so one
-- customer's rooms sit together, and within a room events are in time order.
ORDER BY (room_name, created_at, event_id)
-- Needed for insert_deduplication_token on a non-replicated table (a re-sent batch is dropped).
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_input_mv TO {db}.events AS
SELECT
    event_id,
    event_type,
    api_version,
    fromUnixTimestamp64Milli(created_at_ms, 'UTC') AS created_at,
    fromUnixTimestamp64Milli(received_at_ms, 'UTC') AS received_at,
    room_name,
    meeting_id,
    subdomain,
    room_session_id,
    participant_id,
    display_name,
    role_name,
    role_class,
    external_id,
    metadata,
    metadata_raw,
    is_dial_in,
    num_clients,
    customer_id,
    customer_name,
    customer_resolution,
    user_id,
    user_resolution,
    dimension_version,
    enrichment_version,
    fromUnixTimestamp64Milli(enriched_at_ms, 'UTC') AS enriched_at
FROM {db}.events_input;
