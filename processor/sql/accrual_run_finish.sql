-- What the date's charges add up to, counted from the charges themselves so that a run
-- restarted after a crash reports what both runs charged; conflicts add up across runs.
UPDATE paystream.accrual_run r
SET finished_at = now(),
    installments = s.installments,
    late_fees = s.late_fees,
    interest = s.interest,
    conflicts = r.conflicts + $3
FROM (
    SELECT count(DISTINCT ch.installment_id) AS installments,
           coalesce(sum(ch.amount) FILTER (WHERE ch.kind = 'late_fee'), 0) AS late_fees,
           coalesce(sum(ch.amount) FILTER (WHERE ch.kind = 'interest'), 0) AS interest
    FROM paystream.charge ch
    JOIN paystream.installment i ON i.id = ch.installment_id
    WHERE ch.business_date = $2 AND i.currency = $1
) s
WHERE r.calendar = $1 AND r.business_date = $2
RETURNING r.installments, r.late_fees, r.interest, r.conflicts
