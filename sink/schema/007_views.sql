-- The BI views over the derived rows (issue 12). Names and columns are documented in sink/VIEWS.md.
--
-- One definition each: every view takes a `[from, to)` range (`*_between`, `*_period` views) and its
-- all-time twin is the same view over the whole range DateTime64 can hold. A connection counts in the
-- range its anchor (its join; its `left` when the join was lost) is in, a session in the range it
-- started in: the same rule for a month, a day or all time, so the periods of a year add up to the year.
--
-- The derived tables are ReplacingMergeTree(version, deleted): read with FINAL, deleted rows dropped.
-- A key never spans partitions, so FINAL needs no merge across them
-- (do_not_merge_across_partitions_select_final, which lets ClickHouse read merged months as they are).
-- `argMax(tuple(x), v).1`: argMax skips NULL values, and NULL (unresolved, or no registered user) can be
-- the newest answer.

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
    display_name,
    role_name,
    role_class,
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
    dims_version
FROM {db}.session_rows FINAL
WHERE NOT deleted AND started_at >= {from:DateTime64(3, 'UTC')} AND started_at < {to:DateTime64(3, 'UTC')}
SETTINGS do_not_merge_across_partitions_select_final = 1;

CREATE OR REPLACE VIEW {db}.room_sessions AS
SELECT * FROM {db}.sessions_between(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- The facts every usage view sums: one row per connection and one per session in the range, each with
-- its minutes split by role class and flags for how it ended. Not meant for BI directly.
CREATE OR REPLACE VIEW {db}.usage_rows AS
SELECT
    'connection' AS kind,
    anchor_at AS at,
    room_name,
    customer_id,
    customer_name,
    dims_version,
    external_id,
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
    if(role_class = 'human', coalesce(user_id, external_id), NULL) AS user_key,
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
    NULL AS user_key,
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
    toUInt64(uniqExact(user_key)) AS unique_users,
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
    toUInt64(uniqExact(user_key)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY day, customer_id;

CREATE OR REPLACE VIEW {db}.usage_by_customer_day AS
SELECT * FROM {db}.usage_by_customer_day_period(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));

-- Usage per user over [from, to): one row per (customer, externalId) with minutes, registered or not;
-- user_id/user_name come from a registered user. Connections without an externalId form one row per
-- customer with external_id NULL.
CREATE OR REPLACE VIEW {db}.usage_by_user_period AS
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    external_id,
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
GROUP BY customer_id, external_id;

-- Usage per user per UTC day of [from, to).
CREATE OR REPLACE VIEW {db}.usage_by_user_day_period AS
SELECT
    toDate(at) AS day,
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    external_id,
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
GROUP BY day, customer_id, external_id;

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
    toUInt64(uniqExact(user_key)) AS unique_users,
    toUInt64(sum(session)) AS sessions
FROM {db}.usage_rows(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY room_name;

CREATE OR REPLACE VIEW {db}.rooms AS
SELECT * FROM {db}.rooms_between(
    from = toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'));
