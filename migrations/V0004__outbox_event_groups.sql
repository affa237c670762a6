-- One outbox row per lane and topic of a transaction, carrying that transaction's events of
-- the lane in order (up to 128 events and 64 KiB: paystream_common::OUTBOX_EVENTS_PER_ROW and
-- OUTBOX_ROW_BYTES; more open the lane's next row), instead of one row per event. The
-- database's work per row (a heap tuple and its index entry written by the processor,
-- deleted by the relay, cleaned by vacuum) was most of the relay's cost and a tenth of the
-- processor's; a 2,000-payment transaction now writes about 32 rows instead of 2,000.
--
-- Order per aggregate is unchanged: a lane's rows are published in id order and a row's
-- events in array order. An aggregate's events of one transaction sit in one row in the
-- order they happened, or in consecutive rows of its lane inserted in order, and a later
-- transaction of the same aggregate, which waited for the earlier one's installment lock,
-- inserts its rows after that one committed.
--
-- Event ids stay unique by construction (derived from the fact: outbox::event_id) and are
-- what consumers deduplicate on; the unique index on them is gone with the per-event rows.
--
-- Upgrade with the processors stopped (their old statements name the dropped columns); rows
-- still waiting become single-event rows and are published by the new relay.
ALTER TABLE paystream.outbox
    ADD COLUMN events smallint,
    ADD COLUMN keys text[],
    ADD COLUMN event_ids uuid[],
    ADD COLUMN event_types text[],
    ADD COLUMN payloads bytea[];

UPDATE paystream.outbox
SET events = 1, keys = ARRAY[key], event_ids = ARRAY[event_id], event_types = ARRAY[event_type],
    payloads = ARRAY[payload];

ALTER TABLE paystream.outbox
    DROP COLUMN key,
    DROP COLUMN event_id,
    DROP COLUMN event_type,
    DROP COLUMN payload,
    ALTER COLUMN events SET NOT NULL,
    ALTER COLUMN keys SET NOT NULL,
    ALTER COLUMN event_ids SET NOT NULL,
    ALTER COLUMN event_types SET NOT NULL,
    ALTER COLUMN payloads SET NOT NULL,
    -- `events` is kept beside the arrays so that counting the backlog reads no array.
    ADD CONSTRAINT outbox_events_aligned CHECK (
        events BETWEEN 1 AND 128
        AND cardinality(keys) = events
        AND cardinality(event_ids) = events
        AND cardinality(event_types) = events
        AND cardinality(payloads) = events
    ),
    -- A full row is about 17 KB and goes out of line, stored as it is: never compressed
    -- (Avro with random ids hardly compresses; the CPU would be spent for nothing). Measured
    -- against rows kept within 7,000 bytes and inline in their page (about 25 events a row):
    -- the database spent a third less per drained event on the larger rows, chunks and all.
    ALTER COLUMN keys SET STORAGE EXTERNAL,
    ALTER COLUMN event_ids SET STORAGE EXTERNAL,
    ALTER COLUMN event_types SET STORAGE EXTERNAL,
    ALTER COLUMN payloads SET STORAGE EXTERNAL,
    -- No statistics on the arrays: no plan reads them, and autoanalyze of this queue table
    -- (which runs often: every row is inserted and deleted) would read every sampled row's
    -- arrays out of line and hash each element (measured: most of the database's CPU while
    -- the relay drained a full outbox).
    ALTER COLUMN keys SET STATISTICS 0,
    ALTER COLUMN event_ids SET STATISTICS 0,
    ALTER COLUMN event_types SET STATISTICS 0,
    ALTER COLUMN payloads SET STATISTICS 0;

-- Rows are now about 60 times fewer for the same events: vacuum after 2,000 dead rows (the
-- relay's scans walk past that many dead entries at most, as before at 20,000), and clean
-- the out-of-line chunks as readily.
ALTER TABLE paystream.outbox SET (
    autovacuum_vacuum_threshold = 2000,
    toast.autovacuum_vacuum_scale_factor = 0,
    toast.autovacuum_vacuum_threshold = 20000,
    toast.autovacuum_vacuum_cost_delay = 0
);

CREATE OR REPLACE VIEW paystream.outbox_backlog AS
SELECT coalesce(sum(o.events), 0)::bigint AS pending,
       coalesce(extract(epoch FROM now() - min(o.created_at)), 0)::double precision AS oldest_age_seconds
FROM paystream.outbox o;
