-- One installment of $3 due per bench contract of namespace $2.
INSERT INTO paystream.installment (id, contract_id, seq, due_date, currency, amount_due)
SELECT md5($2 || '/i/' || c)::uuid, md5($2 || '/k/' || c)::uuid, 1, date '2027-01-10', 'BRL', $3
FROM generate_series(1, $1::int) c
ON CONFLICT DO NOTHING
