-- The audit trail's cost in the database: the processor's batch of 100 partial payments
-- (the ledger's transfers, the payments, the installment UPDATE, an outbox row a lane)
-- with the audit triggers disabled and enabled, interleaved, each run twice in a
-- subtransaction (the second timed) and rolled back, so that the book does not change. Then
-- the two audited statements alone. Minimum and median in ms.
--
--   psql -v rounds=150 -f benchmarks/sql/audit_batch_cost.sql
--
-- As a superuser, on a migrated database of its own with 100,000 installments
-- (`paystream seed --customers 10000 --installments 10`): it disables and enables the
-- triggers. To measure other trigger functions (migration 14's, say), load them first and
-- `CALL paystream.audit_generate('<table>')` for each audited table afterwards.
\set ON_ERROR_STOP on
DROP SCHEMA IF EXISTS bench_audit CASCADE;
CREATE SCHEMA bench_audit;
CREATE TABLE bench_audit.ids AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM paystream.installment;
ALTER TABLE bench_audit.ids ADD PRIMARY KEY (n);
ANALYZE bench_audit.ids;

CREATE FUNCTION bench_audit.run(variants text[], setups text[], stmts text[], grouped boolean, n integer)
RETURNS TABLE (variant text, stmt integer, min_ms numeric, median_ms numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    d float8;
    i integer;
    v integer;
    s integer;
    k integer;
    parts integer[];
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS bench_audit_times (v integer, s integer, ms float8);
    TRUNCATE bench_audit_times;
    FOR i IN 1..n LOOP
        FOR v IN 1..array_length(variants, 1) LOOP
            EXECUTE setups[v];
            -- Grouped: all statements as one batch; else each on its own.
            FOR s IN 1..CASE WHEN grouped THEN 1 ELSE array_length(stmts, 1) END LOOP
                parts := CASE WHEN grouped THEN (SELECT array_agg(g) FROM generate_series(1, array_length(stmts, 1)) g)
                              ELSE ARRAY[s] END;
                FOR k IN 1..2 LOOP
                    BEGIN
                        t := clock_timestamp();
                        FOR j IN 1..array_length(parts, 1) LOOP
                            EXECUTE stmts[parts[j]];
                        END LOOP;
                        d := extract(epoch FROM clock_timestamp() - t) * 1000;
                        RAISE EXCEPTION 'roll back';
                    EXCEPTION WHEN raise_exception THEN
                        IF k = 2 THEN
                            INSERT INTO bench_audit_times VALUES (v, s, d);
                        END IF;
                    END;
                END LOOP;
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN QUERY
    SELECT variants[x.v], x.s, round(min(x.ms)::numeric, 3),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY x.ms))::numeric, 3)
    FROM bench_audit_times x GROUP BY x.v, x.s ORDER BY x.s, x.v;
END
$$;

\set off 'ALTER TABLE paystream.installment DISABLE TRIGGER audit_update; ALTER TABLE paystream.payment DISABLE TRIGGER audit_insert'
\set on 'ALTER TABLE paystream.installment ENABLE TRIGGER audit_update; ALTER TABLE paystream.payment ENABLE TRIGGER audit_insert'
\set journals 'INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line, credit_account, currency, amount) SELECT paystream.uuid_v7_from(clock_timestamp(), gen_random_uuid()), 0, ''payment'', ''bench/'' || g, 0, ''provider_clearing:bench'', 1, ''receivable:'' || md5(''bench/'' || g)::uuid, ''BRL'', 0.01 FROM generate_series(1, 100) g'
\set payments 'INSERT INTO paystream.payment (provider, provider_payment_id, installment_id, rail, amount, currency, status, reason, amount_applied, amount_credited, journal_id, occurred_at, source_partition, source_offset, applied_late_fee, applied_interest) SELECT ''bench'', ''b_'' || g || ''_'' || gen_random_uuid(), x.id, ''pix'', 0.01, ''BRL'', ''applied'', NULL, 0.01, 0, gen_random_uuid(), now(), 0, g, 0, 0 FROM generate_series(1, 100) g JOIN bench_audit.ids x ON x.n = g'
\set installments 'UPDATE paystream.installment i SET amount_paid = u.amount_paid, late_fee_paid = u.late_fee_paid, interest_paid = u.interest_paid, status = u.status, version = i.version + 1, paid_at = CASE WHEN u.status = ''paid'' THEN coalesce(i.paid_at, now()) END FROM (SELECT i2.id, i2.amount_paid + 0.01 AS amount_paid, ''partially_paid'' AS status, i2.late_fee_paid, i2.interest_paid FROM (SELECT DISTINCT x.id FROM (SELECT 1 + floor(random() * 100000)::int AS n FROM generate_series(1, 100) OFFSET 0) g JOIN bench_audit.ids x ON x.n = g.n) x JOIN paystream.installment i2 ON i2.id = x.id) u WHERE i.id = u.id'
\set outbox 'INSERT INTO paystream.outbox (lane, topic, events, frames) SELECT g % 2, ''paystream.payments.events.v1'', 50, string_agg(int4send(36) || convert_to(md5(g::text)::uuid::text, ''UTF8'') || uuid_send(gen_random_uuid()) || int4send(14) || convert_to(''PaymentApplied'', ''UTF8'') || int4send(200) || decode(repeat(''c3'', 200), ''hex''), ''''::bytea) FROM generate_series(1, 100) g GROUP BY g % 2'

-- The batch.
SELECT variant, min_ms, median_ms
FROM bench_audit.run(ARRAY['off', 'on'], ARRAY[:'off', :'on'],
                     ARRAY[:'journals', :'payments', :'installments', :'outbox'], true, :rounds);
-- 1: the installment UPDATE, 2: the payment INSERT.
SELECT * FROM bench_audit.run(ARRAY['off', 'on'], ARRAY[:'off', :'on'], ARRAY[:'installments', :'payments'], false, :rounds);

:on;
DROP SCHEMA bench_audit CASCADE;
