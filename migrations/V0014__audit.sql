-- The audit trail: every change to contracts, installments, payments, reversals and customers,
-- as ids and the changed columns' old and new values, from a whitelist per table. Personal
-- data (a customer's name, CPF, email, phone) is never in the whitelist, so it never reaches
-- the log. A column added to one of these tables later is neither audited nor named as
-- redacted until a migration generates its table's function again with it.
--
-- Written by statement-level AFTER triggers over transition tables: one INSERT ... SELECT per
-- statement of the processor's set-based batches, not one trigger call per row. The trigger
-- functions are SECURITY DEFINER, owned by paystream_owner: service roles hold no privilege on
-- audit_log, so they can neither write it directly nor remove what it holds.
--
-- One row per statement that changed rows, up to 1,000 changed rows a row (a bulk statement
-- is split: one jsonb value is capped at 256 MiB, which a million-row INSERT exceeded): the processor's batches write a hundred payments
-- in one statement, and one audit row for them costs a fraction of a hundred (measured with
-- benchmarks/sql/rows_limit.sql: the processor's rows took about 35% longer to write with an
-- audit row per changed row, about 20% with one per statement).
CREATE TABLE paystream.audit_log (
    id bigserial,
    table_name text NOT NULL,
    action text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    -- How many rows the statement changed: the length of `changes`.
    rows integer NOT NULL CHECK (rows > 0),
    -- One element per changed row: {"key": {...}, "new": {...}} for an INSERT (every
    -- whitelisted column), {"key", "old"} for a DELETE, {"key", "old", "new"} for an UPDATE
    -- (only the whitelisted columns that changed), plus "redacted": ["email", ...] naming the
    -- columns outside the whitelist an UPDATE changed (a customer's personal data: the change is
    -- on record, its values are not). Keys are the row's key columns, e.g. {"id": "..."} or
    -- {"provider": "...", "provider_payment_id": "..."}.
    changes jsonb NOT NULL,
    -- The login role of the session. Inside the SECURITY DEFINER trigger current_user is the
    -- owner, so the session's user is what names who made the change.
    role name NOT NULL,
    txid xid8 NOT NULL,
    at timestamptz NOT NULL,
    -- The partition key (the month of `at`, migration 16) must be in the primary key.
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
-- Monthly partitions come with migration 16; DEFAULT takes whatever no month holds, so a
-- missing month never fails a change.
CREATE TABLE paystream.audit_log_default PARTITION OF paystream.audit_log DEFAULT;
-- Seals read one day at a time; a BRIN index costs the inserts almost nothing (rows arrive in
-- time order).
CREATE INDEX audit_log_at_brin ON paystream.audit_log USING brin (at);
-- A batch's changes are a few dozen KiB of repetitive text: lz4 compresses them at a small
-- fraction of pglz's CPU.
ALTER TABLE paystream.audit_log ALTER COLUMN changes SET COMPRESSION lz4;

-- One trigger function per table, generated here from the whitelist with the columns named in
-- its statements: a generic function over to_jsonb(row) made the processor's rows about twice
-- as expensive to write, these cost a jsonb object per row. Each function is SECURITY
-- DEFINER with a fixed search_path, and fires once
-- per statement over its transition tables. Keys are never updated in paystream (UPDATEs join
-- the old and new rows on them).
DO $gen$
DECLARE
    t record;
    keys text[];
    cols text[];
    others text[];
    key_n text;
    key_o text;
    join_on text;
    obj_n text;
    obj_o text;
    unchanged text;
    redacted text;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('contract', 'id', 'customer_id,currency,principal,status,version,created_at,settled_at,'
         'late_fee_rate,monthly_interest_rate,allocation_order,renegotiated_from'),
        ('installment', 'id', 'contract_id,seq,due_date,currency,amount_due,amount_paid,status,version,paid_at,'
         'late_fee,late_fee_paid,interest,interest_paid,overdue_since,accrued_through'),
        -- A payment's rail, times and inbound position are written once and kept in its row:
        -- building them into every payment's audit entry cost more than all its money columns.
        ('payment', 'provider,provider_payment_id',
         'installment_id,amount,currency,status,reason,amount_applied,amount_credited,amount_reversed,'
         'amount_refunded,journal_id,applied_late_fee,applied_interest'),
        ('reversal', 'provider,reversal_id',
         'provider_payment_id,kind,amount,applied_amount,status,reason,journal_id,reversed_at'),
        -- Never name, tax_id, email or phone.
        ('customer', 'id', 'created_at,anonymised_at')) AS v(name, keys, cols)
    LOOP
        keys := string_to_array(t.keys, ',');
        cols := string_to_array(t.cols, ',');
        SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO others
        FROM pg_attribute a
        WHERE a.attrelid = format('paystream.%I', t.name)::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname::text <> ALL (keys) AND a.attname::text <> ALL (cols);
        SELECT 'jsonb_build_object(' || string_agg(format('%L, n.%I', k, k), ', ') || ')',
               'jsonb_build_object(' || string_agg(format('%L, o.%I', k, k), ', ') || ')',
               string_agg(format('o.%I = n.%I', k, k), ' AND ')
          INTO key_n, key_o, join_on FROM unnest(keys) AS k;
        SELECT 'jsonb_build_object(' || string_agg(format('%L, n.%I', c, c), ', ') || ')',
               'jsonb_build_object(' || string_agg(format('%L, o.%I', c, c), ', ') || ')',
               'ARRAY[' || string_agg(format('CASE WHEN o.%I IS NOT DISTINCT FROM n.%I THEN %L END', c, c, c), ', ')
                   || ']::text[]'
          INTO obj_n, obj_o, unchanged FROM unnest(cols) AS c;
        SELECT coalesce('array_remove(ARRAY['
                        || string_agg(format('CASE WHEN o.%I IS DISTINCT FROM n.%I THEN %L END', c, c, c), ', ')
                        || ']::text[], NULL)', '''{}''::text[]')
          INTO redacted FROM unnest(others) AS c;

        EXECUTE format($f$
CREATE FUNCTION paystream.%1$I() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO paystream.audit_log (table_name, action, rows, changes, role, txid, at)
        SELECT %2$L, 'INSERT', count(*), jsonb_agg(jsonb_build_object('key', %3$s, 'new', %6$s)),
               session_user, pg_current_xact_id(), now()
        FROM (SELECT r.*, (row_number() OVER () - 1) / %10$s AS chunk FROM new_rows r) n
        GROUP BY n.chunk;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO paystream.audit_log (table_name, action, rows, changes, role, txid, at)
        SELECT %2$L, 'UPDATE', count(*),
               jsonb_agg(CASE WHEN cardinality(y.redacted) > 0
                              THEN jsonb_build_object('key', y.k, 'old', y.o, 'new', y.n, 'redacted', to_jsonb(y.redacted))
                              ELSE jsonb_build_object('key', y.k, 'old', y.o, 'new', y.n) END),
               session_user, pg_current_xact_id(), now()
        FROM (SELECT x.*, (row_number() OVER () - 1) / %10$s AS chunk
              FROM (SELECT %3$s AS k, %7$s - u.unchanged AS o, %6$s - u.unchanged AS n, %9$s AS redacted
                    FROM new_rows n JOIN old_rows o ON %5$s
                    CROSS JOIN LATERAL (SELECT %8$s AS unchanged) u) x
              -- A row that an UPDATE left as it was (SET x = x) is not a change.
              WHERE x.n <> '{}'::jsonb OR cardinality(x.redacted) > 0) y
        GROUP BY y.chunk;
    ELSE
        INSERT INTO paystream.audit_log (table_name, action, rows, changes, role, txid, at)
        SELECT %2$L, 'DELETE', count(*), jsonb_agg(jsonb_build_object('key', %4$s, 'old', %7$s)),
               session_user, pg_current_xact_id(), now()
        FROM (SELECT r.*, (row_number() OVER () - 1) / %10$s AS chunk FROM old_rows r) o
        GROUP BY o.chunk;
    END IF;
    RETURN NULL;
END
$body$$f$, 'audit_' || t.name, t.name, key_n, key_o, join_on, obj_n, obj_o, unchanged, redacted, 1000);
        EXECUTE format('REVOKE ALL ON FUNCTION paystream.%I() FROM PUBLIC', 'audit_' || t.name);

        -- One trigger per event: INSERT has no OLD TABLE, DELETE no NEW TABLE.
        EXECUTE format('CREATE TRIGGER audit_insert AFTER INSERT ON paystream.%I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION paystream.%I()', t.name, 'audit_' || t.name);
        EXECUTE format('CREATE TRIGGER audit_update AFTER UPDATE ON paystream.%I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION paystream.%I()', t.name, 'audit_' || t.name);
        EXECUTE format('CREATE TRIGGER audit_delete AFTER DELETE ON paystream.%I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION paystream.%I()', t.name, 'audit_' || t.name);
    END LOOP;
END
$gen$;

-- Tamper evidence: `paystream audit seal --date D` stores, for day D (UTC), a SHA-256 over the
-- day's audit rows and journals with postings, chained to the previous seal's hash;
-- `paystream audit verify` recomputes every sealed day. A seal is written once.
CREATE TABLE paystream.audit_seal (
    day date PRIMARY KEY,
    prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    rows bigint NOT NULL CHECK (rows >= 0),
    sealed_at timestamptz NOT NULL DEFAULT now()
);

-- Journals are read by day for the seals.
CREATE INDEX journal_created_at_brin ON paystream.journal USING brin (created_at);

INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.audit_log'),
    ('paystream_jobs', 'SELECT, INSERT', 'TABLE', 'paystream.audit_seal'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.audit_seal')
ON CONFLICT DO NOTHING;
