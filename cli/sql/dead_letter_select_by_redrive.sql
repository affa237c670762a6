SELECT d.id, d.reason
FROM paystream.dead_letter d
WHERE d.redrive_partition = $1 AND d.redrive_offset = $2
