SELECT p.installment_id, i.contract_id, p.rail, p.amount::text, p.currency::text, p.status, p.reason,
       p.amount_applied::text, p.amount_credited::text, p.amount_reversed::text, p.amount_refunded::text,
       p.journal_id, to_char(p.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(p.applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       (extract(epoch FROM p.applied_at) * 1000)::bigint, p.source_partition, p.source_offset,
       p.applied_late_fee::text, p.applied_interest::text
FROM paystream.payment p
LEFT JOIN paystream.installment i ON i.id = p.installment_id
WHERE p.provider = $1 AND p.provider_payment_id = $2
