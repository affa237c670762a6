-- Held reversals that were applied (locked by the applying transaction).
DELETE FROM paystream.pending_reversal h
USING unnest($1::text[], $2::text[]) AS k(provider, reversal_id)
WHERE h.provider = k.provider AND h.reversal_id = k.reversal_id
