INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line,
                                credit_account, currency, amount)
SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::smallint[],
                     $8::text[], $9::text[], $10::numeric[])
