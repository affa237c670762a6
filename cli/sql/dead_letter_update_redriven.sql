UPDATE paystream.dead_letter
SET redriven_at = now(), redrive_count = redrive_count + 1, redrive_partition = $2, redrive_offset = $3
WHERE id = $1
