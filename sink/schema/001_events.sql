-- One row per Whereby event id; the newest enrichment (highest enrichment_version) wins on merge,
-- and queries read it with FINAL or argMax so analysts never see a duplicate.
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
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(enrichment_version)
PARTITION BY toYYYYMM(created_at)
-- created_at never changes for an event id, so it can lead the key without breaking deduplication.
ORDER BY (toDate(created_at), event_id)
SETTINGS non_replicated_deduplication_window = 10000;
