-- The bench's customers: $1 of them, ids derived from the namespace $2 (idempotent).
INSERT INTO paystream.customer (id, name, tax_id)
SELECT md5($2 || '/c/' || c)::uuid, 'Bench ' || c, lpad(c::text, 11, '0')
FROM generate_series(1, $1::int) c
ON CONFLICT DO NOTHING
