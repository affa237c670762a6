-- $1 customers, $2 contracts each, $3 installments each, $4 currency.
INSERT INTO paystream.contract (id, customer_id, currency, principal)
SELECT md5('paystream-seed/contract/' || c || '/' || k)::uuid,
       md5('paystream-seed/customer/' || c)::uuid,
       $4::text,
       (SELECT sum(100 + ((c * 7 + k * 3 + n) % 20) * 25) FROM generate_series(1, $3::int) AS n)
FROM generate_series(1, $1::int) AS c, generate_series(1, $2::int) AS k
ON CONFLICT (id) DO NOTHING
