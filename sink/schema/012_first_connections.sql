-- Unique participants without a distinct count over millions of ids (issue 15; VIEWS.md §9).
--
-- `uniqExact(participant_id)` over a month of 5 million connections was most of the time of every usage
-- query. A participant's connections all lie in one room, so the deriver, which recomputes a room's
-- connections in time order, can note on each connection the anchor of the same participant's previous
-- connection in the room under the same customer and role class (`prev_anchor_at`, NULL: none). Over any
-- range [from, to) the distinct participants of a group are then exactly its human connections whose
-- previous one is NULL or before `from` (before the start of the day, in the day view): a count, not a
-- set. Same numbers, no approximation. The per-user and per-metadata views keep their distinct counts
-- (their groups are not room-scoped).
--
-- The new columns are filled by deriving every room again (queued below, as 008 and 011 did): `schema
-- upgrade` (and the sink at start) drains the queue before serving.

ALTER TABLE {db}.connection_rows ADD COLUMN IF NOT EXISTS prev_anchor_at Nullable(DateTime64(3, 'UTC'));

-- `unique_users` was the other half of the time: a distinct count over two string columns read for every
-- connection. The user a human connection counts as (its registered user id, else its user key) is kept
-- as a 64-bit hash computed when the row is written (and recomputed by the erasure's UPDATE, which
-- rewrites its inputs); the usage views count distinct hashes: 8 bytes a row instead of two strings. Two
-- ids collide with probability n^2 / 2^65 (below one in 10 million at a million users of one customer),
-- the same order of exactness as uniqExact over strings, which itself keeps 128-bit hashes.
ALTER TABLE {db}.connection_rows ADD COLUMN IF NOT EXISTS counted_user_hash Nullable(UInt64)
    MATERIALIZED if(role_class = 'human' AND coalesce(user_id, user_key) IS NOT NULL,
                    cityHash64(assumeNotNull(coalesce(user_id, user_key))), NULL);

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
    counted_user_hash AS counted_user,
    prev_anchor_at AS prev_at,
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
    CAST(NULL AS Nullable(UInt64)) AS counted_user,
    CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS prev_at,
    1 AS session
FROM {db}.session_rows FINAL
WHERE NOT deleted AND started_at >= {from:DateTime64(3, 'UTC')} AND started_at < {to:DateTime64(3, 'UTC')}
SETTINGS do_not_merge_across_partitions_select_final = 1;

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
    -- distinct human participants: their first connection in the range (VIEWS.md §9)
    toUInt64(countIf(human_participant IS NOT NULL
                     AND (prev_at IS NULL OR prev_at < {from:DateTime64(3, 'UTC')}))) AS unique_participants,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY customer_id;

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
    -- distinct human participants: their first connection in the day's part of the range (VIEWS.md §9)
    toUInt64(countIf(human_participant IS NOT NULL
                     AND (prev_at IS NULL
                          OR prev_at < greatest({from:DateTime64(3, 'UTC')},
                                                toDateTime64(toStartOfDay(at), 3, 'UTC'))))) AS unique_participants,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY day, customer_id;

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
    -- distinct human participants: their first connection in the range (VIEWS.md §9)
    toUInt64(countIf(human_participant IS NOT NULL
                     AND (prev_at IS NULL OR prev_at < {from:DateTime64(3, 'UTC')}))) AS unique_participants,
    toUInt64(uniqExactIf(participant_id, role_class = 'recorder')) AS unique_recorders,
    toUInt64(uniqExactIf(participant_id, role_class = 'streamer')) AS unique_streamers,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY room_name;

INSERT INTO {db}.room_changes (room_name, changed_from)
SELECT room_name, min(created_at)
FROM {db}.events
WHERE room_name != ''
GROUP BY room_name;
