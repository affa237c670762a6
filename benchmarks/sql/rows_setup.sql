-- Scratch copies of the tables the processor writes, with their indexes, defaults and checks
-- (of their triggers, only the audit's: the rows it writes), and 100,000 installments: what rows_limit.sql writes into, for
-- PostgreSQL's limit on the processor's own rows. scripts/bench creates and drops them.
DROP SCHEMA IF EXISTS bench_rows CASCADE;
CREATE SCHEMA bench_rows;
-- The ledger partitioned by month of its version-7 journal ids as paystream's (migrations 20
-- and 22): this month and DEFAULT.
CREATE TABLE bench_rows.transfer (LIKE paystream.transfer INCLUDING ALL) PARTITION BY RANGE (journal_id);
DO $months$
DECLARE
    m timestamptz := date_trunc('month', now());
BEGIN
    EXECUTE format('CREATE TABLE bench_rows.transfer_now PARTITION OF bench_rows.transfer FOR VALUES FROM (%L) TO (%L)',
                   paystream.uuid_v7_floor(m), paystream.uuid_v7_floor(m + interval '1 month'));
END
$months$;
CREATE TABLE bench_rows.transfer_default PARTITION OF bench_rows.transfer DEFAULT;
CREATE TABLE bench_rows.payment (LIKE paystream.payment INCLUDING ALL);
CREATE TABLE bench_rows.installment (LIKE paystream.installment INCLUDING ALL);
CREATE TABLE bench_rows.outbox (LIKE paystream.outbox INCLUDING ALL);
CREATE SEQUENCE bench_rows.ids;
INSERT INTO bench_rows.installment (id, contract_id, seq, due_date, currency, amount_due)
SELECT md5('bench_rows/i/' || c)::uuid, md5('bench_rows/k/' || c)::uuid, 1, date '2027-01-10', 'BRL', 1000000
FROM generate_series(1, 100000) c;
VACUUM ANALYZE bench_rows.installment;
-- The audit rows the processor's statements write through their triggers (migration 18) are
-- rows it writes too: the payment INSERT and the installment UPDATE get the same triggers,
-- their functions copied from paystream's with the copy of the audit log as their target.
CREATE TABLE bench_rows.audit_log (LIKE paystream.audit_log INCLUDING ALL);
DO $audit$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['payment', 'installment'] LOOP
        EXECUTE replace(replace(pg_get_functiondef(format('paystream.audit_%s', t)::regproc),
                                format('FUNCTION paystream.audit_%s()', t), format('FUNCTION bench_rows.audit_%s()', t)),
                        'paystream.audit_log', 'bench_rows.audit_log');
        EXECUTE format('CREATE TRIGGER audit_insert AFTER INSERT ON bench_rows.%I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bench_rows.%I()', t, 'audit_' || t);
        EXECUTE format('CREATE TRIGGER audit_update AFTER UPDATE ON bench_rows.%I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bench_rows.%I()', t, 'audit_' || t);
    END LOOP;
END
$audit$;
