SELECT customer_id
FROM paystream.anonymisation_request
WHERE executed_at IS NOT NULL AND customer_id > $1
ORDER BY customer_id
LIMIT $2
