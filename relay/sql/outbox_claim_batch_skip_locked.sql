-- The oldest rows of the lanes this relay owns, locked for the rest of the transaction.
-- SKIP LOCKED only matters while a lane changes owner; order within a lane is by id, which is
-- commit order for any one aggregate (its rows are written under the installment's lock).
SELECT id, topic, key, event_id, event_type, payload,
       (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
FROM paystream.outbox
WHERE lane = ANY($1::smallint[])
ORDER BY id
LIMIT $2
FOR UPDATE SKIP LOCKED
