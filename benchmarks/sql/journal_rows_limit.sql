-- pgbench: rows_limit.sql with the ledger as it was before migration 22, a journal row and
-- its two postings a payment (with migration 5's per-statement check) in place of one
-- transfer; everything else the same. Needs journal_rows_setup.sql after rows_setup.sql.
\set run random(1, 2000000000)
BEGIN;
-- Version-7 journal ids of this millisecond (the ledger's partition key), a sequence below.
WITH t AS (SELECT left(replace(paystream.uuid_v7_floor(now())::text, '-', ''), 12) AS ms),
j AS (
    INSERT INTO bench_journal.journal (id, kind, reference)
    SELECT (t.ms || '70008000' || lpad(to_hex(nextval('bench_rows.ids')), 12, '0'))::uuid,
           'payment', 'bench/b_' || :run || '_' || g
    FROM t, generate_series(1, 100) g
    RETURNING id, reference
)
INSERT INTO bench_journal.posting (journal_id, line, account, currency, amount)
SELECT j.id, l.line, CASE l.line WHEN 1 THEN 'provider_clearing:bench' ELSE 'receivable:' || md5(j.reference)::uuid END,
       'BRL', l.amount
FROM j, (VALUES (1::smallint, 0.01), (2::smallint, -0.01)) AS l (line, amount);
INSERT INTO bench_rows.payment (provider, provider_payment_id, installment_id, rail, amount, currency, status,
                                amount_applied, journal_id, occurred_at, source_partition, source_offset)
SELECT 'bench', 'b_' || :run || '_' || g, md5('bench_rows/i/' || (1 + floor(random() * 100000)::int))::uuid, 'pix',
       0.01, 'BRL', 'applied', 0.01, gen_random_uuid(), now(), 0, g
FROM generate_series(1, 100) g;
UPDATE bench_rows.installment i
SET amount_paid = i.amount_paid + 0.01, status = 'partially_paid', version = i.version + 1
WHERE i.id IN (SELECT md5('bench_rows/i/' || (1 + floor(random() * 100000)::int))::uuid FROM generate_series(1, 100));
INSERT INTO bench_rows.outbox (lane, topic, events, frames)
SELECT g % 2, 'paystream.payments.events.v1', 50,
       string_agg(int4send(36) || convert_to(md5(g::text)::uuid::text, 'UTF8') || uuid_send(gen_random_uuid())
                  || int4send(14) || convert_to('PaymentApplied', 'UTF8') || int4send(200)
                  || decode(repeat('c3', 200), 'hex'), ''::bytea)
FROM generate_series(1, 100) g
GROUP BY g % 2;
COMMIT;
