-- Dead letters can be re-driven (`paystream deadletters redrive`): their command produced
-- again to the inbound topic, signed, once its cause is fixed. The row records when, how
-- often, and where the last re-driven record went, so that an operator can follow it and a
-- second re-drive is a deliberate act. Versions 9 to 16 are taken by other work.
ALTER TABLE paystream.dead_letter
    ADD COLUMN redriven_at timestamptz,
    ADD COLUMN redrive_count integer NOT NULL DEFAULT 0 CHECK (redrive_count >= 0),
    ADD COLUMN redrive_partition integer,
    ADD COLUMN redrive_offset bigint;

-- The contract view, with the re-drive columns added at its end.
CREATE OR REPLACE VIEW paystream.dead_letters AS
SELECT d.id, d.reason, d.payload, d.source_topic, d.source_partition, d.source_offset, d.received_at,
       d.redriven_at, d.redrive_count, d.redrive_partition, d.redrive_offset
FROM paystream.dead_letter d;
