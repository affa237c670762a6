-- The oldest rows of the given lanes, with their frames: where the relay looks for an event
-- to park (it was in the batch that failed, which took rows from the oldest).
SELECT id, topic, events, frames
FROM paystream.outbox
WHERE lane = ANY($1::smallint[])
ORDER BY id
LIMIT 4096
