INSERT INTO paystream.installment (id, contract_id, seq, due_date, currency, amount_due)
SELECT u.id, $1, u.seq, u.due_date, $2, u.amount_due
FROM unnest($3::uuid[], $4::int[], $5::date[], $6::numeric[]) AS u(id, seq, due_date, amount_due)
