-- This relay session's presence lock (see relay_count_live.sql); session-level, so it goes
-- with the connection.
SELECT pg_try_advisory_lock($1::int, pg_backend_pid())
