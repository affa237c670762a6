INSERT INTO paystream.reversal (provider, reversal_id, provider_payment_id, kind, amount, applied_amount, status,
                                reason, journal_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::text[],
                     $8::text[], $9::uuid[])
