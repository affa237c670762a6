SELECT r.reversal_id, r.kind, r.amount::text, r.currency::text, r.source_partition, r.source_offset,
       to_char(r.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM paystream.pending_reversal r
WHERE r.provider = $1 AND r.provider_payment_id = $2
ORDER BY r.received_at, r.reversal_id
