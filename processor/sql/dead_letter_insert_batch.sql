INSERT INTO paystream.dead_letter (source_topic, source_partition, source_offset, reason, payload)
SELECT $1, u.source_partition, u.source_offset, u.reason, u.payload
FROM unnest($2::int[], $3::bigint[], $4::text[], $5::bytea[]) AS u(source_partition, source_offset, reason, payload)
ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING
