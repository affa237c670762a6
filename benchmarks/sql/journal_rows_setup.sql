-- The ledger as it was before migration 22, for journal_rows_limit.sql to measure beside
-- rows_limit.sql (docs/benchmarks.md, "A transfer-row ledger"): a journal row and one
-- posting row a line, partitioned by month of the journal's version-7 id (migration 20),
-- with migration 5's statement-level check (orphans and balance) on the postings. Runs
-- after rows_setup.sql (its sequence, payments, installments and outbox are shared).
DROP SCHEMA IF EXISTS bench_journal CASCADE;
CREATE SCHEMA bench_journal;
CREATE TABLE bench_journal.journal (
    id          uuid NOT NULL,
    kind        text NOT NULL,
    reference   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE bench_journal.posting (
    journal_id  uuid NOT NULL,
    line        smallint NOT NULL,
    account     text NOT NULL,
    currency    char(3) NOT NULL,
    amount      numeric(20, 2) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (journal_id, line)
) PARTITION BY RANGE (journal_id);
DO $months$
DECLARE
    m timestamptz := date_trunc('month', now());
BEGIN
    EXECUTE format('CREATE TABLE bench_journal.journal_now PARTITION OF bench_journal.journal FOR VALUES FROM (%L) TO (%L)',
                   paystream.uuid_v7_floor(m), paystream.uuid_v7_floor(m + interval '1 month'));
    EXECUTE format('CREATE TABLE bench_journal.posting_now PARTITION OF bench_journal.posting FOR VALUES FROM (%L) TO (%L)',
                   paystream.uuid_v7_floor(m), paystream.uuid_v7_floor(m + interval '1 month'));
END
$months$;
CREATE TABLE bench_journal.journal_default PARTITION OF bench_journal.journal DEFAULT;
CREATE TABLE bench_journal.posting_default PARTITION OF bench_journal.posting DEFAULT;
CREATE INDEX posting_account_idx ON bench_journal.posting (account, currency);
CREATE INDEX journal_created_at_brin ON bench_journal.journal USING brin (created_at);

-- Migration 5's check: one probe per journal of the statement, and every journal balanced.
CREATE FUNCTION bench_journal.posting_statement_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    orphan uuid;
    unbalanced record;
BEGIN
    SELECT p.journal_id INTO orphan
    FROM (SELECT DISTINCT journal_id FROM new_postings) p
    LEFT JOIN LATERAL (SELECT true AS found FROM bench_journal.journal j WHERE j.id = p.journal_id LIMIT 1) j ON true
    WHERE j.found IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting to journal %, which does not exist', orphan USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.journal_id, n.currency, sum(n.amount) AS total INTO unbalanced
    FROM new_postings n
    GROUP BY n.journal_id, n.currency
    HAVING sum(n.amount) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal % does not balance in %', unbalanced.journal_id, unbalanced.currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER posting_statement_check
AFTER INSERT ON bench_journal.posting
REFERENCING NEW TABLE AS new_postings
FOR EACH STATEMENT EXECUTE FUNCTION bench_journal.posting_statement_check();
