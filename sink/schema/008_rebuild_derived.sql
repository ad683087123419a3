-- Derive the connection and session rows of every room already stored (an upgrade from a release that
-- had no derived rows): each room is queued for the deriver as if all its events had just arrived.
-- On a new store `events` is empty and this queues nothing. `whereby-pipeline schema upgrade` (and the
-- sink at start) drains the queue before serving; progress is logged (docs/upgrading.md).
INSERT INTO {db}.room_changes (room_name, changed_from)
SELECT room_name, min(created_at)
FROM {db}.events
WHERE room_name != ''
GROUP BY room_name;
