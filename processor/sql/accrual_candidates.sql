-- The next $4 overdue installments of calendar $1 (ids after $3) not yet charged through
-- business date $2, read without locks: accrual computes their charges outside the
-- transaction that writes them, which checks their version (optimistic concurrency).
SELECT i.id, i.version, i.contract_id, i.amount_due, i.amount_paid, i.due_date, i.accrued_through,
       c.late_fee_rate, c.monthly_interest_rate
FROM paystream.installment i
JOIN paystream.contract c ON c.id = i.contract_id
WHERE i.currency = $1 AND i.status = 'overdue' AND i.id > $3
  AND (i.accrued_through IS NULL OR i.accrued_through < $2)
ORDER BY i.id
LIMIT $4
