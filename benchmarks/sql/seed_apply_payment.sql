-- One payment through the seed design's function (seed_design.sql), in a transaction of its
-- own: the caller runs it outside any transaction block.
SELECT bench_seed.apply_payment($1, $2, $3, $4, $5, $6, $7, $8, $9)
