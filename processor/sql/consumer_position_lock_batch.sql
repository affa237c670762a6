-- Locks the stored positions of the transaction's partitions, in partition order, for the
-- rest of the transaction and returns them. A zombie worker of a revoked partition waits
-- here, then sees the advanced position; the fixed order keeps two transactions that share
-- partitions (a zombie and the new owner) from deadlocking.
INSERT INTO paystream.consumer_position (consumer_group, topic, partition, next_offset)
SELECT $1, $2, p.partition, 0
FROM unnest($3::int[]) AS p(partition)
ORDER BY p.partition
ON CONFLICT (consumer_group, topic, partition)
DO UPDATE SET updated_at = paystream.consumer_position.updated_at
RETURNING partition, next_offset
