-- One contract of principal $3 per bench customer of namespace $2.
INSERT INTO paystream.contract (id, customer_id, currency, principal)
SELECT md5($2 || '/k/' || c)::uuid, md5($2 || '/c/' || c)::uuid, 'BRL', $3
FROM generate_series(1, $1::int) c
ON CONFLICT DO NOTHING
