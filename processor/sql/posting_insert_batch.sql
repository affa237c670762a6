INSERT INTO paystream.posting (journal_id, line, account, currency, amount)
SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::numeric[])
