-- Relay sessions connected to this database now: each holds one presence lock (advisory,
-- namespace $1, keyed by its backend pid) for as long as it is connected. Counting those,
-- not sessions by application_name, keeps a psql or a pooler that borrows the name from
-- shrinking every relay's share (which left lanes nobody drained).
SELECT count(*)::int
FROM pg_locks
WHERE locktype = 'advisory' AND classid = $1::int::oid AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
