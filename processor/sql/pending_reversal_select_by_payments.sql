-- Which of the batch's payments have reversals held for them: the transaction after the
-- commit applies those (reading them here locks nothing).
SELECT DISTINCT h.provider, h.provider_payment_id
FROM paystream.pending_reversal h
JOIN unnest($1::text[], $2::text[]) AS k(provider, provider_payment_id)
  ON h.provider = k.provider AND h.provider_payment_id = k.provider_payment_id
