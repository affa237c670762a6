-- The transfer-row ledger measured against today's journal and postings, in PostgreSQL alone
-- (docs/benchmarks.md, "A transfer-row ledger"). Runs after rows_setup.sql, into its scratch
-- schema: a transfer is one row with its debit and credit accounts and one positive amount,
-- as TigerBeetle models a transfer, in place of a journal row and two posting rows. It is
-- balanced by construction, so it needs no balance check; the journal and postings get
-- migration 5's statement-level check (orphans and balance), which the processor's postings
-- pay and rows_setup.sql leaves out.
CREATE TABLE bench_rows.transfer (
    id             uuid NOT NULL,
    kind           text NOT NULL,
    reference      text NOT NULL,
    debit_account  text NOT NULL,
    credit_account text NOT NULL,
    currency       char(3) NOT NULL,
    amount         numeric(20, 2) NOT NULL CHECK (amount > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account <> credit_account),
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
DO $months$
DECLARE
    m timestamptz := date_trunc('month', now());
BEGIN
    EXECUTE format('CREATE TABLE bench_rows.transfer_now PARTITION OF bench_rows.transfer FOR VALUES FROM (%L) TO (%L)',
                   paystream.uuid_v7_floor(m), paystream.uuid_v7_floor(m + interval '1 month'));
    -- Migration 5's check, pointed at the scratch journal.
    EXECUTE replace(replace(pg_get_functiondef('paystream.posting_statement_check'::regproc),
                            'FUNCTION paystream.posting_statement_check()', 'FUNCTION bench_rows.posting_statement_check()'),
                    'paystream.journal', 'bench_rows.journal');
END
$months$;
CREATE TABLE bench_rows.transfer_default PARTITION OF bench_rows.transfer DEFAULT;
-- An account's balance reads both sides: one index per side, where a posting needs one.
CREATE INDEX transfer_debit_idx ON bench_rows.transfer (debit_account, currency);
CREATE INDEX transfer_credit_idx ON bench_rows.transfer (credit_account, currency);
CREATE INDEX transfer_created_at_brin ON bench_rows.transfer USING brin (created_at);
CREATE TRIGGER posting_statement_check
AFTER INSERT ON bench_rows.posting
REFERENCING NEW TABLE AS new_postings
FOR EACH STATEMENT EXECUTE FUNCTION bench_rows.posting_statement_check();
