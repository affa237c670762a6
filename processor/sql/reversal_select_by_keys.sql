-- Reversals already recorded among the batch's keys, applied or held: a redelivery of
-- either is a duplicate.
SELECT r.provider, r.reversal_id
FROM paystream.reversal r
JOIN unnest($1::text[], $2::text[]) AS k(provider, reversal_id)
  ON r.provider = k.provider AND r.reversal_id = k.reversal_id
UNION ALL
SELECT h.provider, h.reversal_id
FROM paystream.pending_reversal h
JOIN unnest($1::text[], $2::text[]) AS k(provider, reversal_id)
  ON h.provider = k.provider AND h.reversal_id = k.reversal_id
