-- Takes the oldest rows after id $3 of the lanes this relay owns: locked with SKIP LOCKED and
-- deleted in one statement, uncommitted until every row of the transaction is acknowledged by
-- the broker (a rollback puts them back). Other relays skip them while this transaction runs.
-- $3 is the last id this transaction took (0 at its start): its own deleted rows are not dead
-- yet, and without the bound every batch of a chain would walk past all of them again. A row
-- below $3 that commits late is taken by the next transaction.
-- SKIP LOCKED only matters while a lane changes owner; order within a lane is by id, which is
-- commit order for any one aggregate (its rows are written under its lock).
-- The inner scan must walk the primary key in id order and stop after $2 rows, however stale
-- the statistics of this queue table are: the relay's session disables sorts for that. The
-- rows are found again by ctid (no second index lookup), and RETURNING does not keep the
-- order: the caller sorts by id.
DELETE FROM paystream.outbox
WHERE ctid = ANY (ARRAY(
    SELECT ctid
    FROM paystream.outbox
    WHERE lane = ANY($1::smallint[]) AND id > $3
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
RETURNING id, topic, key, event_id, event_type, payload,
          (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
