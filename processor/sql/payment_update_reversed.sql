UPDATE paystream.payment p
SET amount_reversed = u.amount_reversed,
    amount_credited = u.amount_credited,
    status = CASE WHEN u.amount_reversed >= p.amount THEN 'reversed' ELSE p.status END
FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[]) AS u(provider, payment_id, amount_reversed, amount_credited)
WHERE p.provider = u.provider AND p.provider_payment_id = u.payment_id
