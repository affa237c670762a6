-- Stored positions of newly assigned partitions: where consumption starts.
SELECT partition, next_offset
FROM paystream.consumer_position
WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
