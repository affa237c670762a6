-- Scratch copies of the tables the processor writes, with their indexes, defaults and checks
-- (not their triggers), and 100,000 installments: what rows_limit.sql writes into, for
-- PostgreSQL's limit on the processor's own rows. scripts/bench creates and drops them.
DROP SCHEMA IF EXISTS bench_rows CASCADE;
CREATE SCHEMA bench_rows;
CREATE TABLE bench_rows.journal (LIKE paystream.journal INCLUDING ALL);
CREATE TABLE bench_rows.posting (LIKE paystream.posting INCLUDING ALL);
CREATE TABLE bench_rows.payment (LIKE paystream.payment INCLUDING ALL);
CREATE TABLE bench_rows.installment (LIKE paystream.installment INCLUDING ALL);
CREATE TABLE bench_rows.outbox (LIKE paystream.outbox INCLUDING ALL);
CREATE SEQUENCE bench_rows.ids;
INSERT INTO bench_rows.installment (id, contract_id, seq, due_date, currency, amount_due)
SELECT md5('bench_rows/i/' || c)::uuid, md5('bench_rows/k/' || c)::uuid, 1, date '2027-01-10', 'BRL', 1000000
FROM generate_series(1, 100000) c;
VACUUM ANALYZE bench_rows.installment;
