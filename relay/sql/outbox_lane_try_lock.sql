-- Session-level: held until this relay's connection ends, so a dead relay's lanes free up.
SELECT pg_try_advisory_lock($1::int, $2::int)
