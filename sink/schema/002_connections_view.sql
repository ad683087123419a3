-- A connection is one participantId in one room: joined at the earliest room.client.joined, left at
-- the latest room.client.left. Customer and user come from the newest enrichment.
CREATE VIEW IF NOT EXISTS {db}.connections AS
SELECT
    room_name,
    participant_id,
    minIf(created_at, event_type = 'room.client.joined') AS joined_at,
    maxIf(created_at, event_type = 'room.client.left') AS left_at,
    if(countIf(event_type = 'room.client.left') > 0 AND countIf(event_type = 'room.client.joined') > 0,
       toInt64(dateDiff('millisecond', joined_at, left_at) / 1000), NULL) AS seconds,
    argMax(role_name, enrichment_version) AS role_name,
    argMax(role_class, enrichment_version) AS role_class,
    argMax(external_id, enrichment_version) AS external_id,
    argMax(user_id, enrichment_version) AS user_id,
    argMax(customer_id, enrichment_version) AS customer_id
FROM {db}.events FINAL
WHERE event_type IN ('room.client.joined', 'room.client.left') AND participant_id IS NOT NULL
GROUP BY room_name, participant_id;
