-- The lanes some session holds now (advisory, namespace $1): a lane held by nobody for a few
-- claim intervals is taken by any relay, whatever its share, so that no lane is left undrained.
SELECT objid::int
FROM pg_locks
WHERE locktype = 'advisory' AND classid = $1::int::oid AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
