-- The rows of a claimed batch, after every record of it was acknowledged.
DELETE FROM bench_seed.outbox WHERE id = ANY($1::bigint[])
