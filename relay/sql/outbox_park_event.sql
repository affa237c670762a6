-- Parks one event the broker refused for good (see migration 8), with the broker's answer;
-- the caller then rewrites its row without it (or deletes the row, when it was the only one).
INSERT INTO paystream.outbox_parked (outbox_id, lane, topic, key, event_id, event_type, payload, error, committed_at)
SELECT o.id, o.lane, o.topic, $2, $3, $4, $5, $6, o.created_at
FROM paystream.outbox o
WHERE o.id = $1
