-- Views for BI tools. Stable names and columns (documented in sink/VIEWS.md); the merge and
-- deduplication logic lives here, so an analyst never sees a duplicate or a partial aggregate.
--
-- The `dims` states hold a packed string (see 002_aggregates.sql): `splitByChar('\x1f', …)` and
-- "'' is NULL, else drop the leading '='" decode it.
--
-- Two families:
-- * all-time views (`connections`, `room_sessions`, `rooms`, `usage_by_*_day`): merge every partition;
-- * parameterised period views (`connections_between`, `sessions_between`, `usage_by_customer_period`,
--   `usage_by_user_period`), `[from, to)` on the join (start) instant: they read only the months of
--   the range plus one on each side, so their cost follows the range, not the table. The bound this
--   relies on: every event of a connection (its joins, its lefts) and the session end that closes it
--   fall in the connection's join month or the month after; every event of a session in its start
--   month or the month after. A connection joined on Jan 31 and left on Feb 1 is counted, once, in
--   January. A later `left` or session end is not seen by a period view (the connection stays open
--   there); the all-time views have no bound.

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
            -- decoded here, before the join, so that only the columns a query uses travel through it
            splitByChar('\x1f', argMaxMerge(dims)) AS d,
            if(d[1] = '', NULL, substring(d[1], 2)) AS customer_id,
            if(d[2] = '', NULL, substring(d[2], 2)) AS customer_name,
            if(d[3] = '', NULL, substring(d[3], 2)) AS user_id,
            if(d[4] = '', NULL, substring(d[4], 2)) AS external_id,
            if(d[5] = '', NULL, substring(d[5], 2)) AS display_name,
            if(d[6] = '', NULL, substring(d[6], 2)) AS role_name,
            if(d[7] = '', NULL, substring(d[7], 2)) AS role_class
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
    c.customer_id AS customer_id,
    c.customer_name AS customer_name,
    c.user_id AS user_id,
    c.external_id AS external_id,
    c.display_name AS display_name,
    c.role_name AS role_name,
    coalesce(c.role_class, 'human') AS role_class,
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

-- `connections` for the connections that joined in [from, to): the same columns, computed from the
-- months from-1 .. to+1 only (see the bound above). Session ends before `from` cannot close a
-- connection that joined at or after it, so they are not read either.
CREATE VIEW IF NOT EXISTS {db}.connections_between AS
WITH
    c AS (
        SELECT
            room_name,
            participant_id,
            min(joined_at) AS joined_at,
            max(left_at) AS left_at,
            max(room_session_id) AS seen_session_id,
            max(dims_version) AS dims_version,
            -- decoded here, before the join, so that only the columns a query uses travel through it
            splitByChar('\x1f', argMaxMerge(dims)) AS d,
            if(d[1] = '', NULL, substring(d[1], 2)) AS customer_id,
            if(d[2] = '', NULL, substring(d[2], 2)) AS customer_name,
            if(d[3] = '', NULL, substring(d[3], 2)) AS user_id,
            if(d[4] = '', NULL, substring(d[4], 2)) AS external_id,
            if(d[5] = '', NULL, substring(d[5], 2)) AS display_name,
            if(d[6] = '', NULL, substring(d[6], 2)) AS role_name,
            if(d[7] = '', NULL, substring(d[7], 2)) AS role_class
        FROM {db}.connection_states
        WHERE event_month BETWEEN makeDate32(toYear({from:DateTime64(3, 'UTC')}), toMonth({from:DateTime64(3, 'UTC')}), 1) - INTERVAL 1 MONTH AND makeDate32(toYear(({to:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND)), toMonth(({to:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND)), 1) + INTERVAL 1 MONTH
        GROUP BY room_name, participant_id
        HAVING joined_at >= {from:DateTime64(3, 'UTC')} AND joined_at < {to:DateTime64(3, 'UTC')}
    ),
    ends AS (
        SELECT room_name, room_session_id, assumeNotNull(session_end) AS ended_at, 1 AS matched
        FROM (
            SELECT room_name, room_session_id, max(ended_at) AS session_end
            FROM {db}.session_states
            WHERE event_month BETWEEN makeDate32(toYear({from:DateTime64(3, 'UTC')}), toMonth({from:DateTime64(3, 'UTC')}), 1) AND makeDate32(toYear(({to:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND)), toMonth(({to:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND)), 1) + INTERVAL 1 MONTH
            GROUP BY room_name, room_session_id
        )
        WHERE session_end >= {from:DateTime64(3, 'UTC')}
    )
SELECT
    c.room_name AS room_name,
    c.participant_id AS participant_id,
    coalesce(c.seen_session_id, if(e.matched = 1, e.room_session_id, NULL)) AS room_session_id,
    c.customer_id AS customer_id,
    c.customer_name AS customer_name,
    c.user_id AS user_id,
    c.external_id AS external_id,
    c.display_name AS display_name,
    c.role_name AS role_name,
    coalesce(c.role_class, 'human') AS role_class,
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

-- One row per room session that started in [from, to) (started_at as in `room_sessions`), without
-- the per-session minutes: the session count of the period views.
CREATE VIEW IF NOT EXISTS {db}.sessions_between AS
SELECT
    room_name,
    room_session_id,
    if(d[1] = '', NULL, substring(d[1], 2)) AS customer_id,
    if(d[2] = '', NULL, substring(d[2], 2)) AS customer_name,
    coalesce(started, first_seen) AS started_at,
    ended AS ended_at
FROM (
    SELECT room_name, room_session_id, min(started_at) AS started, min(first_seen_at) AS first_seen,
           max(ended_at) AS ended, splitByChar('\x1f', argMaxMerge(dims)) AS d
    FROM {db}.session_states
    WHERE event_month BETWEEN makeDate32(toYear({from:DateTime64(3, 'UTC')}), toMonth({from:DateTime64(3, 'UTC')}), 1) - INTERVAL 1 MONTH AND makeDate32(toYear(({to:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND)), toMonth(({to:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND)), 1) + INTERVAL 1 MONTH
    GROUP BY room_name, room_session_id
)
WHERE started_at >= {from:DateTime64(3, 'UTC')} AND started_at < {to:DateTime64(3, 'UTC')};

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
            splitByChar('\x1f', argMaxMerge(dims)) AS d
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
    if(s.d[1] = '', NULL, substring(s.d[1], 2)) AS customer_id,
    if(s.d[2] = '', NULL, substring(s.d[2], 2)) AS customer_name,
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
            -- Wrapped in a tuple: argMax skips NULL values, and "unresolved" (NULL) can be the newest.
            argMax(tuple(customer_id), dims_version).1 AS customer_id,
            argMax(tuple(customer_name), dims_version).1 AS customer_name,
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
            argMax(tuple(if(d[1] = '', NULL, substring(d[1], 2))), v).1 AS customer_id,
            argMax(tuple(if(d[2] = '', NULL, substring(d[2], 2))), v).1 AS customer_name,
            max(v) AS version,
            min(coalesce(started, first_seen)) AS first_session_started_at,
            max(coalesce(started, first_seen)) AS last_session_started_at,
            uniqExact(room_session_id) AS sessions
        FROM (
            SELECT room_name, room_session_id, min(started_at) AS started, min(first_seen_at) AS first_seen,
                   max(dims_version) AS v, splitByChar('\x1f', argMaxMerge(dims)) AS d
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
    SELECT 'session' AS kind, toDate(coalesce(started, first_seen)) AS day, if(d[1] = '', NULL, substring(d[1], 2)) AS customer_id,
           if(d[2] = '', NULL, substring(d[2], 2)) AS customer_name, NULL AS participant_id, NULL AS user_id, '' AS role_class,
           0 AS minutes, false AS is_open
    FROM (
        SELECT min(started_at) AS started, min(first_seen_at) AS first_seen, splitByChar('\x1f', argMaxMerge(dims)) AS d
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

-- Usage per customer over [from, to): connections that joined, and sessions that started, in the
-- range (one row per customer with usage; customer_id NULL is the unresolved bucket). The view BI and
-- the read API use for "usage per customer this month": its cost follows the range (see the bound at
-- the top). unique_* are exact distinct counts over the whole period.
CREATE VIEW IF NOT EXISTS {db}.usage_by_customer_period AS
SELECT
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
    SELECT 'connection' AS kind, customer_id, customer_name, participant_id, user_id, role_class,
           ifNull(minutes, 0) AS minutes, is_open
    FROM {db}.connections_between(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
    UNION ALL
    SELECT 'session' AS kind, customer_id, customer_name, NULL AS participant_id, NULL AS user_id,
           '' AS role_class, 0 AS minutes, false AS is_open
    FROM {db}.sessions_between(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
)
GROUP BY customer_id;

-- Usage per user (per customer) over [from, to): as usage_by_user_day, for the whole range.
CREATE VIEW IF NOT EXISTS {db}.usage_by_user_period AS
SELECT
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
FROM {db}.connections_between(from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
GROUP BY customer_id, user_id;
