SELECT r.customer_id
FROM paystream.anonymisation_request r
JOIN paystream.anonymisation_eligible e USING (customer_id)
WHERE r.executed_at IS NULL
ORDER BY r.requested_at, r.customer_id
LIMIT $1
