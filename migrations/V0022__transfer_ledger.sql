-- The ledger as transfers: one row per movement of money from one account to another, with
-- one positive amount, in place of a journal row and one posting row per line (as
-- TigerBeetle models a transfer). A payment was three rows and five index entries (the
-- journal's key, two postings' keys and their two account index entries); it is one row
-- with its key and an entry in each side's account index. Measured in PostgreSQL alone
-- (benchmarks/sql/transfer_rows_limit.sql against rows_limit.sql, docs/benchmarks.md): the
-- ledger statement took half the time and the commit a third less.
--
-- A transfer is balanced by construction, so the per-statement balance check of migration
-- 5 goes: nothing can write half a journal any more. A journal of more than two lines (a
-- payment partly kept as the customer's credit, a reversal from credit and receivable, a
-- renegotiation) is several transfers with the same journal id, numbered by `seq`; each
-- side names the journal line it belongs to (`debit_line`, `credit_line`), so the journal's
-- postings are still there, line by line, for every reader: the views `journal` and
-- `posting` below have the columns and the rows of the tables they replace, and the audit
-- seals made over those rows verify unchanged. The code splits a journal by pairing its
-- debit lines with its credit lines in line order, the cumulative amounts of one side
-- against the other's (ledger::JournalRows); this migration splits the journals already
-- written the same way.
--
-- Partitioned by month of the journal id like the tables it replaces (migration 20), with
-- the same DEFAULT safety net, months and append-only triggers.

SET LOCAL TimeZone = 'UTC';

CREATE TABLE paystream.transfer (
    journal_id      uuid NOT NULL,
    seq             smallint NOT NULL CHECK (seq >= 0),
    kind            text NOT NULL,
    reference       text NOT NULL,
    debit_line      smallint NOT NULL,
    debit_account   text NOT NULL,
    credit_line     smallint NOT NULL,
    credit_account  text NOT NULL,
    currency        char(3) NOT NULL,
    amount          numeric(20, 2) NOT NULL CHECK (amount > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_line <> credit_line),
    PRIMARY KEY (journal_id, seq)
) PARTITION BY RANGE (journal_id);
CREATE TABLE paystream.transfer_default PARTITION OF paystream.transfer DEFAULT;
-- An account's balance reads both sides: one index a side, where a posting had one.
CREATE INDEX transfer_debit_account_idx ON paystream.transfer (debit_account, currency);
CREATE INDEX transfer_credit_account_idx ON paystream.transfer (credit_account, currency);
-- The audit seals read a day's journals.
CREATE INDEX transfer_created_at_brin ON paystream.transfer USING brin (created_at);

DO $months$
DECLARE
    m date;
BEGIN
    FOR m IN
        SELECT DISTINCT paystream.uuid_v7_month(id) FROM paystream.journal
        WHERE paystream.uuid_v7_month(id) IS NOT NULL
        UNION
        SELECT (date_trunc('month', current_date) + make_interval(months => k))::date FROM generate_series(0, 3) k
        ORDER BY 1
    LOOP
        EXECUTE format('CREATE TABLE paystream.%I PARTITION OF paystream.transfer FOR VALUES FROM (%L) TO (%L)',
                       'transfer_p' || to_char(m, 'YYYY_MM'), paystream.partition_bound('uuid_v7', m),
                       paystream.partition_bound('uuid_v7', (m + interval '1 month')::date));
    END LOOP;
END
$months$;

-- The journals written so far, split into transfers: each line covers an interval of its
-- side's running total (debits and credits each in line order), and every overlap of a
-- debit line's interval with a credit line's is one transfer of the overlap's length. A
-- journal of two lines is one transfer; no amount is lost or made (the two sides of a
-- journal have the same total, migration 5's check).
INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line,
                                credit_account, currency, amount, created_at)
WITH side AS (
    SELECT p.journal_id, p.line, p.account, p.currency, abs(p.amount) AS amount, p.amount > 0 AS debit,
           sum(abs(p.amount)) OVER (PARTITION BY p.journal_id, p.amount > 0 ORDER BY p.line) AS upto
    FROM paystream.posting p
)
SELECT d.journal_id,
       (row_number() OVER (PARTITION BY d.journal_id ORDER BY d.line, c.line) - 1)::smallint,
       j.kind, j.reference, d.line, d.account, c.line, c.account, d.currency,
       least(d.upto, c.upto) - greatest(d.upto - d.amount, c.upto - c.amount), j.created_at
FROM side d
JOIN side c ON c.journal_id = d.journal_id AND NOT c.debit
           AND c.upto - c.amount < d.upto AND d.upto - d.amount < c.upto
JOIN paystream.journal j ON j.id = d.journal_id
WHERE d.debit;

-- The views that read the old tables, then the tables themselves. A DROP is not refused by
-- the append-only triggers (they guard rows, and the tables' go with them).
DROP VIEW paystream.trial_balance;
DROP VIEW paystream.account_balances;
DROP VIEW paystream.partition_default_rows;
DROP TABLE paystream.posting;
DROP TABLE paystream.journal;
DROP FUNCTION paystream.posting_statement_check();

CREATE TRIGGER transfer_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON paystream.transfer
FOR EACH STATEMENT EXECUTE FUNCTION paystream.ledger_append_only();
CREATE TRIGGER transfer_append_only_row
BEFORE UPDATE OR DELETE ON paystream.transfer
FOR EACH ROW EXECUTE FUNCTION paystream.ledger_append_only_row();

-- The journals and postings, as they were: a journal is its first transfer's head; a
-- posting line is the sum of the transfers that name it on their side (one, but for the
-- line of a split journal that pairs with several lines of the other side).
CREATE VIEW paystream.journal AS
SELECT t.journal_id AS id, t.kind, t.reference, t.created_at
FROM paystream.transfer t
WHERE t.seq = 0;

CREATE VIEW paystream.posting AS
SELECT s.journal_id, s.line, s.account, s.currency, sum(s.amount)::numeric(20, 2) AS amount
FROM (SELECT t.journal_id, t.debit_line AS line, t.debit_account AS account, t.currency, t.amount
      FROM paystream.transfer t
      UNION ALL
      SELECT t.journal_id, t.credit_line, t.credit_account, t.currency, -t.amount
      FROM paystream.transfer t) s
GROUP BY s.journal_id, s.line, s.account, s.currency;

-- The contract views (same columns, same meaning): every debit is a transfer's amount, and
-- so is every credit.
CREATE VIEW paystream.trial_balance AS
SELECT t.currency, sum(t.amount) AS debits, sum(t.amount) AS credits
FROM paystream.transfer t
GROUP BY t.currency;

CREATE VIEW paystream.account_balances AS
SELECT s.account, s.currency, sum(s.amount) AS balance
FROM (SELECT t.debit_account AS account, t.currency, t.amount FROM paystream.transfer t
      UNION ALL
      SELECT t.credit_account, t.currency, -t.amount FROM paystream.transfer t) s
GROUP BY s.account, s.currency;

UPDATE paystream.partitioned_table SET name = 'transfer', key_column = 'journal_id' WHERE name = 'journal';
DELETE FROM paystream.partitioned_table WHERE name = 'posting';

-- DEFAULT's rows per table; for the ledger only ids with a month (`uuid_v7_month`) count.
CREATE VIEW paystream.partition_default_rows AS
SELECT 'audit_log'::text AS parent, count(*) AS rows, min(at)::date AS oldest FROM paystream.audit_log_default
UNION ALL
SELECT 'charge', count(*), min(business_date) FROM paystream.charge_default
UNION ALL
SELECT 'transfer', count(*), min(paystream.uuid_v7_month(journal_id))
FROM paystream.transfer_default WHERE paystream.uuid_v7_month(journal_id) IS NOT NULL;

-- The grants follow: the processor and the jobs append transfers and read the views they
-- read before; nobody inserts into the views.
DELETE FROM paystream.role_privilege WHERE object IN ('paystream.journal', 'paystream.posting');
INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.transfer'),
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.journal'),
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.posting'),
    ('paystream_jobs', 'SELECT, INSERT', 'TABLE', 'paystream.transfer'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.journal'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.posting')
ON CONFLICT DO NOTHING;
