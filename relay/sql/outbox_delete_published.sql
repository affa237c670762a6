-- Published rows go: the journal and the payment rows are the record, the outbox is a queue.
DELETE FROM paystream.outbox WHERE id = ANY($1::bigint[])
