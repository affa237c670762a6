-- The payments that this batch's reversals reverse, locked, read after the installments were
-- locked so that their amounts are current.
SELECT p.provider, p.provider_payment_id, p.installment_id, p.status, p.amount, p.currency,
       p.amount_credited, p.amount_reversed, p.amount_refunded, p.applied_late_fee, p.applied_interest
FROM paystream.payment p
JOIN unnest($1::text[], $2::text[]) AS k(provider, provider_payment_id)
  ON p.provider = k.provider AND p.provider_payment_id = k.provider_payment_id
ORDER BY p.provider, p.provider_payment_id
FOR UPDATE OF p
