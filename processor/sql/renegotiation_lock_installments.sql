-- The contract's unpaid installments, locked in id order: the processor's lock order, so a
-- batch of payments to them and the renegotiation wait for each other instead of deadlocking.
SELECT i.id, i.amount_due, i.amount_paid, i.late_fee, i.late_fee_paid, i.interest, i.interest_paid
FROM paystream.installment i
WHERE i.contract_id = $1 AND i.status IN ('open', 'partially_paid', 'overdue')
ORDER BY i.id
FOR UPDATE
