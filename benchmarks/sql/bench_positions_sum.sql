-- Messages a consumer group has applied, over all its partitions.
SELECT coalesce(sum(next_offset), 0)::bigint FROM paystream.consumer_position WHERE consumer_group = $1
