SELECT count(*)
FROM paystream.installment i
WHERE i.currency = $1 AND i.status = 'overdue' AND (i.accrued_through IS NULL OR i.accrued_through < $2)
