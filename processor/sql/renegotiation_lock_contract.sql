-- Locked after its installments, as the processor locks a contract it settles.
SELECT c.customer_id, c.currency, c.status, c.late_fee_rate, c.monthly_interest_rate, c.allocation_order
FROM paystream.contract c
WHERE c.id = $1
FOR UPDATE
