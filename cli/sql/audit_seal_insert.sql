INSERT INTO paystream.audit_seal (day, prev_hash, hash, rows) VALUES ($1::text::date, $2, $3, $4)
