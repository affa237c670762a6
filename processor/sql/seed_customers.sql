-- Deterministic demo customers: the same arguments always give the same rows and ids.
INSERT INTO paystream.customer (id, name, tax_id, email)
SELECT md5('paystream-seed/customer/' || c)::uuid,
       'Customer ' || c,
       lpad(c::text, 11, '0'),
       'customer' || c || '@example.invalid'
FROM generate_series(1, $1::int) AS c
ON CONFLICT (id) DO NOTHING
