-- Reversals whose payment is not recorded yet (see migration 7).
INSERT INTO paystream.pending_reversal (provider, reversal_id, provider_payment_id, kind, amount, currency, command,
                                        source_partition, source_offset)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::bytea[],
                     $8::int[], $9::bigint[])
