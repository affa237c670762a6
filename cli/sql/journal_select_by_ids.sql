SELECT j.id, j.kind, j.reference, to_char(j.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM paystream.journal j
WHERE j.id = ANY ($1)
ORDER BY j.created_at, j.id
