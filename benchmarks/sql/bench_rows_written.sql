-- Rows inserted and updated so far in paystream's tables and the seed design's: what a run
-- wrote, counted by the database.
SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::bigint
FROM pg_stat_user_tables
WHERE schemaname IN ('paystream', 'bench_seed')
