INSERT INTO paystream.journal (id, kind, reference)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
