-- Locks this partition's stored position for the rest of the transaction and returns it.
-- A zombie worker of a revoked partition waits here, then sees the advanced position.
INSERT INTO paystream.consumer_position (consumer_group, topic, partition, next_offset)
VALUES ($1, $2, $3, 0)
ON CONFLICT (consumer_group, topic, partition)
DO UPDATE SET updated_at = paystream.consumer_position.updated_at
RETURNING next_offset
