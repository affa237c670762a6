-- The same as accrual_candidates.sql for given ids: re-read after a version conflict.
SELECT i.id, i.version, i.contract_id, i.amount_due, i.amount_paid, i.due_date, i.accrued_through,
       c.late_fee_rate, c.monthly_interest_rate
FROM paystream.installment i
JOIN paystream.contract c ON c.id = i.contract_id
WHERE i.id = ANY($1::uuid[]) AND i.status = 'overdue'
  AND (i.accrued_through IS NULL OR i.accrued_through < $2)
ORDER BY i.id
