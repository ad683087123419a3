-- Views for BI tools. Stable names and columns (documented in sink/VIEWS.md); the merge and
-- deduplication logic lives here, so an analyst never sees a duplicate or a partial aggregate.

-- One row per connection (room + participant). A connection without a `left` is closed at the end
-- of the first session of the same room that ends after it joined (ASOF join); until such an end
-- exists it is open: ended_at, seconds and minutes are NULL and it counts in no usage.
CREATE VIEW IF NOT EXISTS {db}.connections AS
WITH
    c AS (
        SELECT
            room_name,
            participant_id,
            min(joined_at) AS joined_at,
            max(left_at) AS left_at,
            max(room_session_id) AS seen_session_id,
            max(dims_version) AS dims_version,
            argMaxMerge(dims) AS d
        FROM {db}.connection_states
        GROUP BY room_name, participant_id
    ),
    ends AS (
        SELECT room_name, room_session_id, assumeNotNull(session_end) AS ended_at, 1 AS matched
        FROM (
            SELECT room_name, room_session_id, max(ended_at) AS session_end
            FROM {db}.session_states
            GROUP BY room_name, room_session_id
        )
        WHERE session_end IS NOT NULL
    )
SELECT
    c.room_name AS room_name,
    c.participant_id AS participant_id,
    coalesce(c.seen_session_id, if(e.matched = 1, e.room_session_id, NULL)) AS room_session_id,
    c.d.customer_id AS customer_id,
    c.d.customer_name AS customer_name,
    c.d.user_id AS user_id,
    c.d.external_id AS external_id,
    c.d.display_name AS display_name,
    c.d.role_name AS role_name,
    coalesce(c.d.role_class, 'human') AS role_class,
    c.joined_at AS joined_at,
    c.left_at AS left_at,
    if(c.joined_at IS NULL, NULL, coalesce(c.left_at, if(e.matched = 1, e.ended_at, NULL))) AS ended_at,
    multiIf(c.joined_at IS NULL, 'no_join', c.left_at IS NOT NULL, 'left', e.matched = 1, 'session_end', 'open')
        AS end_source,
    ended_at IS NULL AS is_open,
    if(ended_at IS NULL, NULL, greatest(toInt64(0), dateDiff('millisecond', c.joined_at, ended_at))) AS duration_ms,
    intDiv(duration_ms, 1000) AS seconds,
    toInt64(ceil(duration_ms / 60000)) AS minutes,
    c.dims_version AS dims_version
FROM c
ASOF LEFT JOIN ends AS e
    ON c.room_name = e.room_name
   AND ifNull(c.joined_at, toDateTime64('2299-12-31 00:00:00', 3, 'UTC')) <= e.ended_at;

-- One row per room session (Insights `room-sessions`).
CREATE VIEW IF NOT EXISTS {db}.room_sessions AS
WITH
    s AS (
        SELECT
            room_name,
            room_session_id,
            min(started_at) AS started_at,
            max(ended_at) AS ended_at,
            min(first_seen_at) AS first_seen_at,
            max(last_seen_at) AS last_seen_at,
            argMaxMerge(dims) AS d
        FROM {db}.session_states
        GROUP BY room_name, room_session_id
    ),
    u AS (
        SELECT
            room_name,
            assumeNotNull(room_session_id) AS room_session_id,
            sumIf(minutes, role_class = 'human') AS participant_minutes,
            sumIf(minutes, role_class = 'recorder') AS recorder_minutes,
            sumIf(minutes, role_class = 'streamer') AS streamer_minutes,
            sumIf(minutes, role_class = 'assistant') AS assistant_minutes,
            sumIf(minutes, role_class = 'captioner') AS captioner_minutes,
            uniqExactIf(participant_id, role_class = 'human') AS unique_participants,
            uniqExactIf(participant_id, role_class = 'recorder') AS unique_recorders,
            uniqExactIf(participant_id, role_class = 'streamer') AS unique_streamers,
            countIf(is_open) AS open_connections
        FROM {db}.connections
        WHERE room_session_id IS NOT NULL
        GROUP BY room_name, room_session_id
    )
SELECT
    s.room_name AS room_name,
    s.room_session_id AS room_session_id,
    s.d.customer_id AS customer_id,
    s.d.customer_name AS customer_name,
    coalesce(s.started_at, s.first_seen_at) AS started_at,
    s.ended_at AS ended_at,
    toUInt64(ifNull(u.participant_minutes, 0)) AS participant_minutes,
    toUInt64(ifNull(u.recorder_minutes, 0)) AS recorder_minutes,
    toUInt64(ifNull(u.streamer_minutes, 0)) AS streamer_minutes,
    toUInt64(ifNull(u.assistant_minutes, 0)) AS assistant_minutes,
    toUInt64(ifNull(u.captioner_minutes, 0)) AS captioner_minutes,
    toUInt64(ifNull(u.unique_participants, 0)) AS unique_participants,
    toUInt64(ifNull(u.unique_recorders, 0)) AS unique_recorders,
    toUInt64(ifNull(u.unique_streamers, 0)) AS unique_streamers,
    toUInt64(ifNull(u.open_connections, 0)) AS open_connections
FROM s
LEFT JOIN u ON s.room_name = u.room_name AND s.room_session_id = u.room_session_id
SETTINGS join_use_nulls = 1;

-- One row per room (Insights `rooms`): usage over all connections of the room.
CREATE VIEW IF NOT EXISTS {db}.rooms AS
WITH
    conn AS (
        SELECT
            room_name,
            argMax(customer_id, dims_version) AS customer_id,
            argMax(customer_name, dims_version) AS customer_name,
            max(dims_version) AS version,
            sumIf(minutes, role_class = 'human') AS participant_minutes,
            sumIf(minutes, role_class = 'recorder') AS recorder_minutes,
            sumIf(minutes, role_class = 'streamer') AS streamer_minutes,
            sumIf(minutes, role_class = 'assistant') AS assistant_minutes,
            sumIf(minutes, role_class = 'captioner') AS captioner_minutes,
            uniqExactIf(participant_id, role_class = 'human') AS unique_participants,
            uniqExactIf(participant_id, role_class = 'recorder') AS unique_recorders,
            uniqExactIf(participant_id, role_class = 'streamer') AS unique_streamers,
            uniqExactIf(user_id, user_id IS NOT NULL) AS unique_users,
            countIf(is_open) AS open_connections
        FROM {db}.connections
        GROUP BY room_name
    ),
    sess AS (
        SELECT
            room_name,
            argMax(d.customer_id, v) AS customer_id,
            argMax(d.customer_name, v) AS customer_name,
            max(v) AS version,
            min(coalesce(started, first_seen)) AS first_session_started_at,
            max(coalesce(started, first_seen)) AS last_session_started_at,
            uniqExact(room_session_id) AS sessions
        FROM (
            SELECT room_name, room_session_id, min(started_at) AS started, min(first_seen_at) AS first_seen,
                   max(dims_version) AS v, argMaxMerge(dims) AS d
            FROM {db}.session_states
            GROUP BY room_name, room_session_id
        )
        GROUP BY room_name
    )
SELECT
    if(conn.room_name != '', conn.room_name, sess.room_name) AS room_name,
    if(ifNull(sess.version, 0) > ifNull(conn.version, 0), sess.customer_id, conn.customer_id) AS customer_id,
    if(ifNull(sess.version, 0) > ifNull(conn.version, 0), sess.customer_name, conn.customer_name)
        AS customer_name,
    sess.first_session_started_at AS first_session_started_at,
    sess.last_session_started_at AS last_session_started_at,
    toUInt64(ifNull(conn.participant_minutes, 0)) AS participant_minutes,
    toUInt64(ifNull(conn.recorder_minutes, 0)) AS recorder_minutes,
    toUInt64(ifNull(conn.streamer_minutes, 0)) AS streamer_minutes,
    toUInt64(ifNull(conn.assistant_minutes, 0)) AS assistant_minutes,
    toUInt64(ifNull(conn.captioner_minutes, 0)) AS captioner_minutes,
    toUInt64(ifNull(conn.unique_participants, 0)) AS unique_participants,
    toUInt64(ifNull(conn.unique_recorders, 0)) AS unique_recorders,
    toUInt64(ifNull(conn.unique_streamers, 0)) AS unique_streamers,
    toUInt64(ifNull(conn.unique_users, 0)) AS unique_users,
    toUInt64(ifNull(sess.sessions, 0)) AS sessions,
    toUInt64(ifNull(conn.open_connections, 0)) AS open_connections
FROM conn
FULL OUTER JOIN sess ON conn.room_name = sess.room_name
SETTINGS join_use_nulls = 1;

-- Usage per customer per day. A connection counts on the UTC day it joined; a session on the UTC
-- day it started. customer_id NULL is the "unresolved" bucket (no registered room-name prefix).
CREATE VIEW IF NOT EXISTS {db}.usage_by_customer_day AS
SELECT
    day,
    customer_id,
    argMax(customer_name, customer_name IS NOT NULL) AS customer_name,
    toUInt64(sumIf(minutes, role_class = 'human')) AS participant_minutes,
    toUInt64(sumIf(minutes, role_class = 'recorder')) AS recorder_minutes,
    toUInt64(sumIf(minutes, role_class = 'streamer')) AS streamer_minutes,
    toUInt64(sumIf(minutes, role_class = 'assistant')) AS assistant_minutes,
    toUInt64(sumIf(minutes, role_class = 'captioner')) AS captioner_minutes,
    toUInt64(countIf(kind = 'connection' AND NOT is_open)) AS connections,
    toUInt64(countIf(kind = 'connection' AND is_open)) AS open_connections,
    toUInt64(uniqExactIf(participant_id, kind = 'connection' AND role_class = 'human')) AS unique_participants,
    toUInt64(uniqExactIf(user_id, kind = 'connection' AND user_id IS NOT NULL)) AS unique_users,
    toUInt64(countIf(kind = 'session')) AS sessions
FROM (
    SELECT 'connection' AS kind, toDate(assumeNotNull(joined_at)) AS day, customer_id, customer_name,
           participant_id, user_id, role_class, ifNull(minutes, 0) AS minutes, is_open
    FROM {db}.connections
    WHERE joined_at IS NOT NULL
    UNION ALL
    -- Straight from the session aggregates: room_sessions would compute every connection again.
    SELECT 'session' AS kind, toDate(coalesce(started, first_seen)) AS day, d.customer_id AS customer_id,
           d.customer_name AS customer_name, NULL AS participant_id, NULL AS user_id, '' AS role_class,
           0 AS minutes, false AS is_open
    FROM (
        SELECT min(started_at) AS started, min(first_seen_at) AS first_seen, argMaxMerge(dims) AS d
        FROM {db}.session_states
        GROUP BY room_name, room_session_id
    )
)
GROUP BY day, customer_id;

-- Usage per user per day. user_id NULL collects connections without a resolved user (no externalId,
-- or one not registered), per customer, so they are visible rather than dropped.
CREATE VIEW IF NOT EXISTS {db}.usage_by_user_day AS
SELECT
    toDate(assumeNotNull(joined_at)) AS day,
    customer_id,
    user_id,
    toUInt64(sumIf(ifNull(minutes, 0), role_class = 'human')) AS participant_minutes,
    toUInt64(sumIf(ifNull(minutes, 0), role_class = 'recorder')) AS recorder_minutes,
    toUInt64(sumIf(ifNull(minutes, 0), role_class = 'streamer')) AS streamer_minutes,
    toUInt64(sumIf(ifNull(minutes, 0), role_class = 'assistant')) AS assistant_minutes,
    toUInt64(sumIf(ifNull(minutes, 0), role_class = 'captioner')) AS captioner_minutes,
    toUInt64(countIf(NOT is_open)) AS connections,
    toUInt64(countIf(is_open)) AS open_connections,
    toUInt64(uniqExact(room_session_id)) AS sessions,
    groupUniqArray(external_id) AS external_ids
FROM {db}.connections
WHERE joined_at IS NOT NULL
GROUP BY day, customer_id, user_id;
