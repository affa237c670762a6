SELECT r.reversal_id, r.kind, r.amount::text, r.applied_amount::text, r.status, r.reason, r.journal_id,
       to_char(r.reversed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       (extract(epoch FROM r.reversed_at) * 1000)::bigint
FROM paystream.reversal r
WHERE r.provider = $1 AND r.provider_payment_id = $2
ORDER BY r.reversed_at, r.reversal_id
