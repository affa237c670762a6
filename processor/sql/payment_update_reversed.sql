-- What the transaction's reversals and reinstatements left of each payment. A rejected
-- payment stays rejected (its money sits in suspense); an applied one is 'reversed' while all
-- of it is, and 'applied' again once a reinstatement brings some back.
UPDATE paystream.payment p
SET amount_reversed = u.amount_reversed,
    amount_credited = u.amount_credited,
    amount_refunded = u.amount_refunded,
    applied_late_fee = u.applied_late_fee,
    applied_interest = u.applied_interest,
    status = CASE WHEN p.status = 'rejected' THEN 'rejected'
                  WHEN u.amount_reversed >= p.amount THEN 'reversed'
                  ELSE 'applied' END
FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::numeric[], $7::numeric[])
     AS u(provider, payment_id, amount_reversed, amount_credited, amount_refunded, applied_late_fee,
          applied_interest)
WHERE p.provider = u.provider AND p.provider_payment_id = u.payment_id
