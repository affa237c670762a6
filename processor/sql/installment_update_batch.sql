UPDATE paystream.installment i
SET amount_paid = u.amount_paid,
    late_fee_paid = u.late_fee_paid,
    interest_paid = u.interest_paid,
    status = u.status,
    version = i.version + 1,
    paid_at = CASE WHEN u.status = 'paid' THEN coalesce(i.paid_at, now()) END
FROM unnest($1::uuid[], $2::numeric[], $3::text[], $4::numeric[], $5::numeric[])
     AS u(id, amount_paid, status, late_fee_paid, interest_paid)
WHERE i.id = u.id
