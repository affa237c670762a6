-- Unique on (installment, business date, kind): the database refuses a second charge of the
-- same day, whatever a run believed.
INSERT INTO paystream.charge (installment_id, business_date, kind, amount, base, days, journal_id)
SELECT u.installment_id, $1, u.kind, u.amount, u.base, u.days, u.journal_id
FROM unnest($2::uuid[], $3::text[], $4::numeric[], $5::numeric[], $6::int[], $7::uuid[])
     AS u(installment_id, kind, amount, base, days, journal_id)
