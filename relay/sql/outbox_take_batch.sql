-- Takes the oldest rows after id $3 of the lanes this relay owns and deletes them in one
-- statement, uncommitted until every row of the transaction is acknowledged by the broker (a
-- rollback puts them back).
-- No FOR UPDATE SKIP LOCKED: the lane's advisory lock already makes this session the only
-- one that takes its rows, and a lane changes owner only between transactions. The row locks
-- the DELETE takes itself are enough: were two sessions ever to take one lane, the second
-- would wait for the first and then find its rows gone, where SKIP LOCKED would let it publish
-- later rows of an aggregate before earlier ones. Locking each row before deleting it wrote a
-- second WAL record per row (measured: the drain rose from about 80,000 to 98,000-118,000
-- events/s without it).
-- $3 is the last id this transaction took (0 at its start): its own deleted rows are not dead
-- yet, and without the bound every batch of a chain would walk past all of them again.
-- Ids are given out before commit, so a row below $3 can commit after the rows above it were
-- taken: its aggregate's next row (written under the aggregate's lock, so after that commit,
-- with a higher id) may then be visible too, and taking it in this chain would publish the
-- aggregate's later event before its earlier one. So a chained batch ($3 > 0) takes nothing
-- when a row below $3 of these lanes is visible (this transaction's own deleted rows are not:
-- any visible one committed late); the transaction then commits what it published, and the
-- next one starts from the oldest row, in id order.
-- The inner scan must walk the primary key in id order and stop after $2 rows, however stale
-- the statistics of this queue table are: the relay's session disables sorts for that. The
-- rows are found again by ctid (no second index lookup), and RETURNING does not keep the
-- order: the caller sorts by id. `created_at` goes out as it is stored (microseconds, binary):
-- converting it here to epoch milliseconds is numeric arithmetic on every row.
DELETE FROM paystream.outbox
WHERE ctid = ANY (ARRAY(
    SELECT ctid
    FROM paystream.outbox
    WHERE lane = ANY($1::smallint[]) AND id > $3
      AND NOT EXISTS (SELECT 1 FROM paystream.outbox late WHERE late.lane = ANY($1::smallint[]) AND late.id < $3)
    ORDER BY id
    LIMIT $2
))
RETURNING id, topic, events, frames, created_at, lane
