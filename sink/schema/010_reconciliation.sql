-- Reconciliation results (issue 13): one row per room session per `whereby-pipeline reconcile` run, read
-- by the sink from the reconciliation topic (reconcile cannot write here itself: in the embedded default
-- only the sink opens the store). A redelivered record adds nothing: the sorting key is the session and
-- the run, and the ReplacingMergeTree keeps one row per key.
--
-- `status` is what the run found (match, mismatch, missing); `after_backfill` the status the run saw once
-- the events it backfilled for the session were stored (NULL when it backfilled nothing, or did not
-- wait). Minutes: `ours_participant_minutes` is the number compared with Insights' totalParticipantMinutes
-- (human + assistant + captioner, every role but recorder and streamer), with its breakdown beside it.

-- cluster shard key: cityHash64(room_session_id)
CREATE TABLE IF NOT EXISTS {db}.reconciliation
(
    run_id                       String,
    checked_at                   DateTime64(3, 'UTC'),
    period_from                  DateTime64(3, 'UTC'),
    period_to                    DateTime64(3, 'UTC'),
    room_session_id              String,
    room_name                    String,
    customer_id                  Nullable(String),
    started_at                   Nullable(DateTime64(3, 'UTC')),
    status                       LowCardinality(String),
    after_backfill               LowCardinality(Nullable(String)),
    ours_participant_minutes     UInt64,
    ours_recorder_minutes        UInt64,
    ours_streamer_minutes        UInt64,
    ours_human_minutes           UInt64,
    ours_assistant_minutes       UInt64,
    ours_captioner_minutes       UInt64,
    insights_participant_minutes UInt64,
    insights_recorder_minutes    UInt64,
    insights_streamer_minutes    UInt64,
    backfilled_events            UInt32,
    schema_version               UInt16,
    inserted_at                  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(checked_at)
ORDER BY (room_session_id, checked_at, run_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The newest result per session (latest check wins; the run id breaks a tie). `current_status` is the
-- status after the run's backfill when it waited for one, else the status found: what the drift panel
-- and the `whereby_reconciliation_*` gauges (hence the alert) count.
CREATE VIEW IF NOT EXISTS {db}.reconciliation_latest AS
SELECT
    room_session_id,
    room_name,
    customer_id,
    started_at,
    checked_at,
    run_id,
    period_from,
    period_to,
    status,
    after_backfill,
    ifNull(after_backfill, status) AS current_status,
    ours_participant_minutes,
    ours_recorder_minutes,
    ours_streamer_minutes,
    ours_human_minutes,
    ours_assistant_minutes,
    ours_captioner_minutes,
    insights_participant_minutes,
    insights_recorder_minutes,
    insights_streamer_minutes,
    toInt64(ours_participant_minutes) - toInt64(insights_participant_minutes) AS participant_minutes_diff,
    backfilled_events
FROM {db}.reconciliation FINAL
ORDER BY room_session_id, checked_at DESC, run_id DESC
LIMIT 1 BY room_session_id;
