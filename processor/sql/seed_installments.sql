INSERT INTO paystream.installment (id, contract_id, seq, due_date, currency, amount_due)
SELECT md5('paystream-seed/installment/' || c || '/' || k || '/' || n)::uuid,
       md5('paystream-seed/contract/' || c || '/' || k)::uuid,
       n,
       (date '2026-01-10' + make_interval(months => n))::date,
       $4::text,
       100 + ((c * 7 + k * 3 + n) % 20) * 25
FROM generate_series(1, $1::int) AS c, generate_series(1, $2::int) AS k, generate_series(1, $3::int) AS n
ON CONFLICT (id) DO NOTHING
