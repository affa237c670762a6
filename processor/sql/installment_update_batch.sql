UPDATE paystream.installment i
SET amount_paid = u.amount_paid,
    status = u.status,
    version = i.version + 1,
    paid_at = CASE WHEN u.status = 'paid' THEN coalesce(i.paid_at, now()) END
FROM unnest($1::uuid[], $2::numeric[], $3::text[]) AS u(id, amount_paid, status)
WHERE i.id = u.id
