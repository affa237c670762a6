-- $4 monthly installments of 1,000 per contract of namespace $2, the first due 2026-02-10.
INSERT INTO paystream.installment (id, contract_id, seq, due_date, currency, amount_due)
SELECT md5($2 || '/i/' || c || '/' || n)::uuid, md5($2 || '/k/' || c)::uuid, n,
       (date '2026-01-10' + make_interval(months => n))::date, $3, 1000
FROM generate_series(1, $1::int) c, generate_series(1, $4::int) n
ON CONFLICT DO NOTHING
