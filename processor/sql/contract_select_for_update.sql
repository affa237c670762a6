-- Locks contracts whose installments this batch paid in full, in id order, so that two
-- partitions paying the last two installments of one contract see each other's result.
SELECT id FROM paystream.contract WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
