-- Users from metadata too, metadata as a BI dimension, who is in a room now, and when hosts arrive
-- (issue 18). Names and columns are documented in sink/VIEWS.md.
--
-- 1. Events carry the user id USER_ID_SOURCE chose (`user_key`) and where it came from (`user_source`:
--    `externalId`, `metadata` or `metadata:<key>`); `external_id` stays what the browser sent. Events
--    stored before, and records of an enrich from before, have no such field: their user is their
--    externalId, which is exactly what the defaults say (computed when read, nothing is rewritten).
-- 2. Connections carry them too, and their party (`host`, `guest` or `bot`: VIEWS.md §8); sessions
--    carry when their first host and their first guest joined. The deriver computes both
--    (sink/model.py), so every room is queued to be derived again, as 008 did: `schema upgrade` (and the
--    sink at start) drains the queue before serving.
-- 3. The per-user views group by (customer_id, user_key); the connection views expose `user_key`,
--    `user_source`, `party`; the session views the arrival times; new views: usage by a metadata key,
--    and the connections open now.

ALTER TABLE {db}.events_input ADD COLUMN IF NOT EXISTS user_key Nullable(String) DEFAULT external_id;
ALTER TABLE {db}.events_input ADD COLUMN IF NOT EXISTS user_source LowCardinality(Nullable(String))
    DEFAULT if(external_id IS NULL, NULL, 'externalId');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS user_key Nullable(String) DEFAULT external_id;
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS user_source LowCardinality(Nullable(String))
    DEFAULT if(external_id IS NULL, NULL, 'externalId');

-- As 005 did: the new view copies the new columns; the previous one is dropped once it exists (in
-- between both copy, and `events` keeps one row per event id).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_input_mv_v3 TO {db}.events AS
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
    user_name,
    user_key,
    user_source
FROM {db}.events_input;

DROP VIEW IF EXISTS {db}.events_input_mv_v2;

ALTER TABLE {db}.connection_rows ADD COLUMN IF NOT EXISTS user_key Nullable(String) DEFAULT external_id;
ALTER TABLE {db}.connection_rows ADD COLUMN IF NOT EXISTS user_source LowCardinality(Nullable(String))
    DEFAULT if(external_id IS NULL, NULL, 'externalId');
ALTER TABLE {db}.connection_rows ADD COLUMN IF NOT EXISTS party LowCardinality(String) DEFAULT '';
ALTER TABLE {db}.session_rows ADD COLUMN IF NOT EXISTS first_host_joined_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE {db}.session_rows ADD COLUMN IF NOT EXISTS first_guest_joined_at Nullable(DateTime64(3, 'UTC'));

CREATE OR REPLACE VIEW {db}.connections_between AS
SELECT
    room_name,
    participant_id,
    connection_id,
    room_session_id,
    session_key,
    session_via,
    customer_id,
    customer_name,
    user_id,
    user_name,
    external_id,
    user_key,
    user_source,
    display_name,
    role_name,
    role_class,
    party,
    metadata,
    joined_at,
    left_at,
    ended_at,
    end_source,
    end_source = 'open' AS is_open,
    end_source = 'no_join' AS is_incomplete,
    end_source = 'estimated' AS is_estimated,
    duration_ms,
    intDiv(duration_ms, 1000) AS seconds,
    minutes,
    sources,
    dims_version,
    anchor_at
FROM {db}.connection_rows FINAL
WHERE NOT deleted AND anchor_at >= {from:DateTime64(3, 'UTC')} AND anchor_at < {to:DateTime64(3, 'UTC')}
SETTINGS do_not_merge_across_partitions_select_final = 1;

CREATE OR REPLACE VIEW {db}.connections AS
SELECT * FROM {db}.connections_between(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- `host_after_guest_s`: the gap between the first guest's and the first host's join, in seconds
-- (positive: the guests waited for the host; negative: the host was there first; NULL: one of them never
-- joined).
CREATE OR REPLACE VIEW {db}.sessions_between AS
SELECT
    room_name,
    room_session_id,
    session_key,
    customer_id,
    customer_name,
    started_at,
    start_source,
    ended_at,
    participant_minutes,
    recorder_minutes,
    streamer_minutes,
    assistant_minutes,
    captioner_minutes,
    connections,
    open_connections,
    incomplete_connections,
    estimated_connections,
    unique_participants,
    unique_recorders,
    unique_streamers,
    first_host_joined_at,
    first_guest_joined_at,
    if(first_host_joined_at IS NULL OR first_guest_joined_at IS NULL, NULL,
       (toUnixTimestamp64Milli(assumeNotNull(first_host_joined_at))
        - toUnixTimestamp64Milli(assumeNotNull(first_guest_joined_at))) / 1000) AS host_after_guest_s,
    dims_version
FROM {db}.session_rows FINAL
WHERE NOT deleted AND started_at >= {from:DateTime64(3, 'UTC')} AND started_at < {to:DateTime64(3, 'UTC')}
SETTINGS do_not_merge_across_partitions_select_final = 1;

CREATE OR REPLACE VIEW {db}.room_sessions AS
SELECT * FROM {db}.sessions_between(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- The facts every usage view sums (not meant for BI directly). Since 011: `user_key` is the
-- connection's user (USER_ID_SOURCE), `counted_user` what `unique_users` counts (a registered user's id,
-- else the user key).
CREATE OR REPLACE VIEW {db}.usage_rows AS
SELECT
    'connection' AS kind,
    anchor_at AS at,
    room_name,
    customer_id,
    customer_name,
    dims_version,
    external_id,
    user_key,
    user_source,
    user_id,
    user_name,
    participant_id,
    role_class,
    session_key,
    metadata,
    if(role_class = 'human', ifNull(minutes, 0), 0) AS participant_minutes,
    if(role_class = 'recorder', ifNull(minutes, 0), 0) AS recorder_minutes,
    if(role_class = 'streamer', ifNull(minutes, 0), 0) AS streamer_minutes,
    if(role_class = 'assistant', ifNull(minutes, 0), 0) AS assistant_minutes,
    if(role_class = 'captioner', ifNull(minutes, 0), 0) AS captioner_minutes,
    end_source IN ('left', 'session_end', 'estimated') AS closed,
    end_source = 'open' AS open,
    end_source = 'no_join' AS incomplete,
    end_source = 'estimated' AS estimated,
    if(role_class = 'human', participant_id, NULL) AS human_participant,
    if(role_class = 'human', coalesce(user_id, user_key), NULL) AS counted_user,
    0 AS session
FROM {db}.connection_rows FINAL
WHERE NOT deleted AND anchor_at >= {from:DateTime64(3, 'UTC')} AND anchor_at < {to:DateTime64(3, 'UTC')}
SETTINGS do_not_merge_across_partitions_select_final = 1
UNION ALL
SELECT
    'session' AS kind,
    started_at AS at,
    room_name,
    customer_id,
    customer_name,
    dims_version,
    NULL AS external_id,
    NULL AS user_key,
    NULL AS user_source,
    NULL AS user_id,
    NULL AS user_name,
    NULL AS participant_id,
    '' AS role_class,
    session_key,
    map() AS metadata,
    0 AS participant_minutes,
    0 AS recorder_minutes,
    0 AS streamer_minutes,
    0 AS assistant_minutes,
    0 AS captioner_minutes,
    false AS closed,
    false AS open,
    false AS incomplete,
    false AS estimated,
    NULL AS human_participant,
    NULL AS counted_user,
    1 AS session
FROM {db}.session_rows FINAL
WHERE NOT deleted AND started_at >= {from:DateTime64(3, 'UTC')} AND started_at < {to:DateTime64(3, 'UTC')}
SETTINGS do_not_merge_across_partitions_select_final = 1;

-- Usage per customer over [from, to); customer_id NULL is the unresolved bucket.
CREATE OR REPLACE VIEW {db}.usage_by_customer_period AS
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    toUInt64(sum(participant_minutes)) AS participant_minutes,
    toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes,
    toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes,
    toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections,
    toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(human_participant)) AS unique_participants,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY customer_id;

-- Usage per customer per UTC day of [from, to).
CREATE OR REPLACE VIEW {db}.usage_by_customer_day_period AS
SELECT
    toDate(at) AS day,
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    toUInt64(sum(participant_minutes)) AS participant_minutes,
    toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes,
    toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes,
    toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections,
    toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(human_participant)) AS unique_participants,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY day, customer_id;

CREATE OR REPLACE VIEW {db}.usage_by_customer_day AS
SELECT * FROM {db}.usage_by_customer_day_period(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- Usage per user over [from, to): one row per (customer, user key) with connections, registered or not.
-- The user key is what USER_ID_SOURCE chose (the externalId by default); `external_id` is the newest
-- externalId sent with the user's connections (the same value under the default setting).
CREATE OR REPLACE VIEW {db}.usage_by_user_period AS
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    user_key,
    argMax(tuple(user_source), (dims_version, at)).1 AS user_source,
    argMax(tuple(external_id), (dims_version, at)).1 AS external_id,
    argMax(tuple(user_id), dims_version).1 AS user_id,
    argMax(tuple(user_name), dims_version).1 AS user_name,
    toUInt64(sum(participant_minutes)) AS participant_minutes,
    toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes,
    toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes,
    toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections,
    toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(session_key)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
WHERE kind = 'connection'
GROUP BY customer_id, user_key;

-- Usage per user per UTC day of [from, to).
CREATE OR REPLACE VIEW {db}.usage_by_user_day_period AS
SELECT
    toDate(at) AS day,
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    user_key,
    argMax(tuple(user_source), (dims_version, at)).1 AS user_source,
    argMax(tuple(external_id), (dims_version, at)).1 AS external_id,
    argMax(tuple(user_id), dims_version).1 AS user_id,
    argMax(tuple(user_name), dims_version).1 AS user_name,
    toUInt64(sum(participant_minutes)) AS participant_minutes,
    toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes,
    toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes,
    toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections,
    toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(session_key)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
WHERE kind = 'connection'
GROUP BY day, customer_id, user_key;

CREATE OR REPLACE VIEW {db}.usage_by_user_day AS
SELECT * FROM {db}.usage_by_user_day_period(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- Usage per room over [from, to) (Insights `rooms`, with customers).
CREATE OR REPLACE VIEW {db}.rooms_between AS
SELECT
    room_name,
    argMax(tuple(customer_id), dims_version).1 AS customer_id,
    argMax(tuple(customer_name), dims_version).1 AS customer_name,
    if(sum(session) = 0, NULL, minIf(at, kind = 'session')) AS first_session_started_at,
    if(sum(session) = 0, NULL, maxIf(at, kind = 'session')) AS last_session_started_at,
    toUInt64(sum(participant_minutes)) AS participant_minutes,
    toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes,
    toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes,
    toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections,
    toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(human_participant)) AS unique_participants,
    toUInt64(uniqExactIf(participant_id, role_class = 'recorder')) AS unique_recorders,
    toUInt64(uniqExactIf(participant_id, role_class = 'streamer')) AS unique_streamers,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY room_name;

CREATE OR REPLACE VIEW {db}.rooms AS
SELECT * FROM {db}.rooms_between(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- Usage per customer and value of one metadata key over [from, to), e.g. minutes per plan:
--   SELECT * FROM whereby.usage_by_metadata_period(from = '2026-01-01 00:00:00', to = '2026-02-01 00:00:00',
--                                                  key = 'plan')
-- `metadata_value` NULL: connections whose metadata has no such key. Keys and values are bounded by
-- enrich (64 and 256 characters, 32 keys per connection). `sessions`: distinct sessions of the row's
-- connections (a session can count under several values).
CREATE OR REPLACE VIEW {db}.usage_by_metadata_period AS
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    {key:String} AS metadata_key,
    if(mapContains(metadata, {key:String}), metadata[{key:String}], NULL) AS metadata_value,
    toUInt64(sum(participant_minutes)) AS participant_minutes,
    toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes,
    toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes,
    toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections,
    toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(human_participant)) AS unique_participants,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(uniqExact(session_key)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
WHERE kind = 'connection'
GROUP BY customer_id, metadata_value;

-- The connections open now (joined, neither left nor closed by a session end or an estimate), with how
-- long they have been open. One open longer than STALE_CONNECTION_S (6 h by default) is stale: its
-- `left` was most likely lost; the read API and the page show it as stale, not as present. Only rows
-- that were open when written are looked at through FINAL, so this costs what the open connections cost,
-- not the table; connections that joined over 92 days ago are not looked at.
CREATE OR REPLACE VIEW {db}.live_connections AS
SELECT
    room_name,
    participant_id,
    connection_id,
    room_session_id,
    session_key,
    customer_id,
    customer_name,
    user_id,
    user_name,
    external_id,
    user_key,
    user_source,
    display_name,
    role_name,
    role_class,
    party,
    metadata,
    joined_at,
    toUInt64(greatest(0, intDiv(toUnixTimestamp64Milli(now64(3)) - toUnixTimestamp64Milli(assumeNotNull(joined_at)),
                                1000))) AS open_s
FROM {db}.connection_rows FINAL
WHERE (room_name, connection_id) IN (
        SELECT room_name, connection_id FROM {db}.connection_rows
        WHERE end_source = 'open' AND anchor_at >= now64(3) - INTERVAL 92 DAY)
  AND anchor_at >= now64(3) - INTERVAL 92 DAY AND NOT deleted AND end_source = 'open'
SETTINGS do_not_merge_across_partitions_select_final = 1;

-- Derive every stored room again, so connections get their party and sessions their arrival times.
INSERT INTO {db}.room_changes (room_name, changed_from)
SELECT room_name, min(created_at)
FROM {db}.events
WHERE room_name != ''
GROUP BY room_name;
