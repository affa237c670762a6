INSERT INTO paystream.payment (provider, provider_payment_id, installment_id, rail, amount, currency, status,
                               reason, amount_applied, amount_credited, journal_id, occurred_at,
                               source_partition, source_offset, applied_late_fee, applied_interest)
SELECT u.provider, u.payment_id, u.installment_id, u.rail, u.amount, u.currency, u.status, u.reason,
       u.applied, u.credited, u.journal_id, to_timestamp(u.occurred_ms / 1000.0), u.source_partition, u.source_offset,
       u.applied_late_fee, u.applied_interest
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::numeric[], $6::text[], $7::text[], $8::text[],
            $9::numeric[], $10::numeric[], $11::uuid[], $12::bigint[], $13::int[], $14::bigint[],
            $15::numeric[], $16::numeric[])
     AS u(provider, payment_id, installment_id, rail, amount, currency, status, reason, applied, credited,
          journal_id, occurred_ms, source_partition, source_offset, applied_late_fee, applied_interest)
