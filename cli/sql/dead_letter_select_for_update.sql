SELECT d.payload, d.reason, d.redriven_at IS NOT NULL
FROM paystream.dead_letter d
WHERE d.id = $1
FOR UPDATE
