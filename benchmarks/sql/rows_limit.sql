-- pgbench: 100 payments' rows a transaction, as the processor writes them for partial payments
-- spread over 100,000 installments (a transfer from the provider's clearing account to the
-- contract's receivable, the payment, the installment's update; their events, 50 to an
-- outbox row; the audit rows of the payment INSERT and the installment UPDATE, written by
-- the same triggers as the processor's), and nothing else: none of the processor's reads,
-- locks, checks or logic. PostgreSQL's limit for these rows, batched.
\set run random(1, 2000000000)
BEGIN;
-- Version-7 journal ids of this millisecond (the ledger's partition key), a sequence below.
WITH t AS (SELECT left(replace(paystream.uuid_v7_floor(now())::text, '-', ''), 12) AS ms)
INSERT INTO bench_rows.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line,
                                 credit_account, currency, amount)
SELECT (t.ms || '70008000' || lpad(to_hex(nextval('bench_rows.ids')), 12, '0'))::uuid, 0,
       'payment', 'bench/b_' || :run || '_' || g, 0, 'provider_clearing:bench',
       1, 'receivable:' || md5('bench/b_' || :run || '_' || g)::uuid, 'BRL', 0.01
FROM t, generate_series(1, 100) g;
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
