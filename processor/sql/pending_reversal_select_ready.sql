-- Held reversals of the given payments whose payment is now recorded, with the payment's
-- installment, oldest first; nothing locked yet (the applying transaction locks in the
-- processor's order: installments, payments, then these rows).
SELECT h.provider, h.reversal_id, h.provider_payment_id, p.installment_id
FROM paystream.pending_reversal h
JOIN paystream.payment p ON p.provider = h.provider AND p.provider_payment_id = h.provider_payment_id
JOIN unnest($1::text[], $2::text[]) AS k(provider, provider_payment_id)
  ON h.provider = k.provider AND h.provider_payment_id = k.provider_payment_id
ORDER BY h.received_at, h.source_partition, h.source_offset
