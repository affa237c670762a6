UPDATE paystream.consumer_position p
SET next_offset = u.next_offset, updated_at = now()
FROM unnest($3::int[], $4::bigint[]) AS u(partition, next_offset)
WHERE p.consumer_group = $1 AND p.topic = $2 AND p.partition = u.partition
