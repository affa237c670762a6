-- The seed design's polling relay: the oldest $1 outbox rows, locked for this transaction;
-- rows another poller holds are skipped.
SELECT id, topic, key, event_id, event_type, payload
FROM bench_seed.outbox
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
