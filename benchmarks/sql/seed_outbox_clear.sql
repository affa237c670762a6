-- Events of a function-level run (no relay runs then): nothing will publish them.
TRUNCATE bench_seed.outbox
