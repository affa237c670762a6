SELECT r.provider, r.reversal_id
FROM paystream.reversal r
JOIN unnest($1::text[], $2::text[]) AS k(provider, reversal_id)
  ON r.provider = k.provider AND r.reversal_id = k.reversal_id
