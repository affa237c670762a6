-- Locks the batch's installments in id order: every batch locks in the same order, so
-- batches of different partitions never deadlock on each other.
SELECT i.id, i.contract_id, c.customer_id, c.status, i.currency, i.amount_due, i.amount_paid, i.status,
       i.late_fee, i.late_fee_paid, i.interest, i.interest_paid, i.overdue_since IS NOT NULL,
       coalesce(c.allocation_order, 'late_fee,interest,principal')
FROM paystream.installment i
JOIN paystream.contract c ON c.id = i.contract_id
WHERE i.id = ANY($1::uuid[])
ORDER BY i.id
FOR UPDATE OF i
