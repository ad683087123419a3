-- Events say where they came from and whose they are (issue 12).
--
-- `source`: `webhook`, or `insights` for a join/leave that `reconcile --backfill` synthesized from
-- Whereby's Insights API (the minute model lets a webhook supersede its synthesized twin). Every event
-- stored before this migration was a webhook, hence the default.
-- `user_name`: the registered user's name (NULL for an externalId nobody registered).
--
-- The input table gains the columns, and a new materialized view copies them; the previous view is
-- dropped after the new one exists (in between both copy, and `events` keeps one row per event id).

ALTER TABLE {db}.events_input ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT 'webhook';
ALTER TABLE {db}.events_input ADD COLUMN IF NOT EXISTS user_name Nullable(String);
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT 'webhook';
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS user_name Nullable(String);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_input_mv_v2 TO {db}.events AS
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
    fromUnixTimestamp64Milli(enriched_at_ms, 'UTC') AS enriched_at,
    source,
    user_name
FROM {db}.events_input;

DROP VIEW IF EXISTS {db}.events_input_mv;

-- The previous model's aggregate states are no longer maintained: connections are derived as
-- intervals (006_derived.sql). The tables stay, untouched, for a rollback (docs/upgrading.md).
DROP VIEW IF EXISTS {db}.connection_states_mv;
DROP VIEW IF EXISTS {db}.session_states_mv;
