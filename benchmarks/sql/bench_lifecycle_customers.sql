-- $1 customers of namespace $2 for the lifecycle bench (idempotent).
INSERT INTO paystream.customer (id, name, tax_id)
SELECT md5($2 || '/c/' || c)::uuid, 'Bench ' || c, lpad(c::text, 11, '0')
FROM generate_series(1, $1::int) c
ON CONFLICT DO NOTHING
