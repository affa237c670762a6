-- Payments already recorded among the batch's keys: duplicates, and the payments that
-- reversals point at.
SELECT p.provider, p.provider_payment_id, p.installment_id
FROM paystream.payment p
JOIN unnest($1::text[], $2::text[]) AS k(provider, provider_payment_id)
  ON p.provider = k.provider AND p.provider_payment_id = k.provider_payment_id
