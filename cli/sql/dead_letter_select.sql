SELECT d.id, d.reason, d.payload, d.source_topic, d.source_partition, d.source_offset,
       to_char(d.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS received_at,
       to_char(d.redriven_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS redriven_at,
       d.redrive_count, d.redrive_partition, d.redrive_offset
FROM paystream.dead_letter d
WHERE (cardinality($1::bigint[]) = 0 OR d.id = ANY ($1))
  AND ($2::text IS NULL OR strpos(lower(d.reason), lower($2::text)) > 0)
  AND ($3::text IS NULL OR d.received_at >= $3::text::timestamptz)
  AND ($4::text IS NULL OR d.received_at < $4::text::timestamptz)
ORDER BY d.id
LIMIT $5
