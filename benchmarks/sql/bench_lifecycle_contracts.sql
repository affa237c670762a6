-- One contract per customer of namespace $2, in currency (calendar) $3.
INSERT INTO paystream.contract (id, customer_id, currency, principal)
SELECT md5($2 || '/k/' || c)::uuid, md5($2 || '/c/' || c)::uuid, $3, 1000 * $4::int
FROM generate_series(1, $1::int) c
ON CONFLICT DO NOTHING
