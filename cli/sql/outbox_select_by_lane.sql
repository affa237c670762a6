SELECT o.id, o.topic, o.frames, to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM paystream.outbox o
WHERE o.lane = $1
ORDER BY o.id
LIMIT 10000
