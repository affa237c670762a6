-- The held reversals to apply, locked; one another transaction holds is skipped (it is
-- applying it). Returns each with the bytes it was read as.
SELECT h.provider, h.reversal_id, h.command, h.source_partition, h.source_offset
FROM paystream.pending_reversal h
JOIN unnest($1::text[], $2::text[]) AS k(provider, reversal_id)
  ON h.provider = k.provider AND h.reversal_id = k.reversal_id
ORDER BY h.received_at, h.source_partition, h.source_offset
FOR UPDATE OF h SKIP LOCKED
