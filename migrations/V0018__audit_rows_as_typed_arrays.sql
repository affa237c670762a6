-- The audit trail, cheaper on the hot path: each audit row keeps its statement's changed rows
-- as arrays of a composite type per table (the key and the whitelisted columns, old and new),
-- and the jsonb diffs of migration 14 are rendered from them when read
-- (`paystream.audit_trail`, `paystream.audit_changes`), not built while the processor waits.
--
-- Measured on the audit row of one UPDATE of 100 installments' partial payments (the
-- trigger's INSERT ... SELECT over copies of its old and new rows, one session, the minimum
-- of 200 interleaved runs; docs/benchmarks.md): migration 14's form took 3.0 ms a statement
-- (two 15-key jsonb objects a row, less the unchanged keys), the same diff built as text and
-- cast to jsonb once 1.1 ms, the rows aggregated into composite arrays 0.32 ms (array_agg of
-- a ROW() copies datums: no per-value conversion, no jsonb to parse). For 100 payments'
-- INSERT: 1.2 ms as jsonb, 0.9 ms as text cast once. The arrays are larger than the diff
-- (about 3 KiB each, lz4-compressed, for 100 rows, against 4 KiB for the jsonb), a cost paid
-- in storage, not in the processor's latency. The processor's whole batch of statements:
-- +66% with migration 14's triggers, +9% with these (benchmarks/sql/audit_batch_cost.sql).
--
-- The guarantees of migration 14 hold unchanged: only whitelisted columns are stored (the row
-- types name no personal column); an UPDATE that changed a column outside the whitelist names
-- it in the new row's `redacted`; rows an UPDATE left as they were are not recorded; the
-- role, transaction id and time are the session's; the functions are SECURITY DEFINER,
-- owned by paystream_owner, and no service role holds any privilege on audit_log. Rows
-- written before this migration keep their `changes` jsonb (and their seals); rows written
-- after it have `changes` NULL and the arrays of their table.

-- What is audited: each table's key columns and the columns whose values are recorded, in
-- the order of its row type. A later migration that adds a column to one of these tables
-- calls paystream.audit_generate(table) again, so that the column is named as redacted (or
-- adds it here first, before a new row type, to have its values recorded).
CREATE TABLE paystream.audited_table (
    table_name text PRIMARY KEY,
    keys text[] NOT NULL CHECK (cardinality(keys) > 0),
    columns text[] NOT NULL
);
INSERT INTO paystream.audited_table VALUES
    ('contract', '{id}', '{customer_id,currency,principal,status,version,created_at,settled_at,late_fee_rate,'
     'monthly_interest_rate,allocation_order,renegotiated_from}'),
    ('installment', '{id}', '{contract_id,seq,due_date,currency,amount_due,amount_paid,status,version,paid_at,'
     'late_fee,late_fee_paid,interest,interest_paid,overdue_since,accrued_through}'),
    -- A payment's rail, times and inbound position are written once and kept in its row.
    ('payment', '{provider,provider_payment_id}', '{installment_id,amount,currency,status,reason,amount_applied,'
     'amount_credited,amount_reversed,amount_refunded,journal_id,applied_late_fee,applied_interest}'),
    ('reversal', '{provider,reversal_id}', '{provider_payment_id,kind,amount,applied_amount,status,reason,journal_id,'
     'reversed_at}'),
    -- Never name, tax_id, email, phone (or any personal column added later).
    ('customer', '{id}', '{created_at,anonymised_at}');

-- One row type per table: its keys, its whitelisted columns (their types as in the table),
-- and `redacted`, the columns outside the whitelist that an UPDATE changed (set on the new
-- side only, NULL when there are none). A row type is never altered once rows use it: the
-- seals hash the stored arrays' text, which an added attribute would change for every sealed
-- row. A whitelist that grows gets a new type and new columns in a later migration.
DO $types$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM paystream.audited_table ORDER BY table_name LOOP
        EXECUTE format('CREATE TYPE paystream.%I AS (%s, redacted text[])', 'audit_' || t.table_name || '_row',
                       (SELECT string_agg(format('%I %s', c.name, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY c.ord)
                        FROM unnest(t.keys || t.columns) WITH ORDINALITY AS c(name, ord)
                        JOIN pg_attribute a ON a.attrelid = format('paystream.%I', t.table_name)::regclass
                                           AND a.attname = c.name AND NOT a.attisdropped));
        EXECUTE format('ALTER TABLE paystream.audit_log ADD COLUMN %I paystream.%I[], ADD COLUMN %I paystream.%I[]',
                       t.table_name || '_old', 'audit_' || t.table_name || '_row',
                       t.table_name || '_new', 'audit_' || t.table_name || '_row');
        EXECUTE format('ALTER TABLE paystream.audit_log ALTER COLUMN %I SET COMPRESSION lz4, '
                       'ALTER COLUMN %I SET COMPRESSION lz4', t.table_name || '_old', t.table_name || '_new');
    END LOOP;
END
$types$;
ALTER TABLE paystream.audit_log ALTER COLUMN changes DROP NOT NULL;
-- Partitions created before this (DEFAULT among them) do not take a compression set on the
-- parent; partitions created later copy it (maintain_partitions: LIKE ... INCLUDING COMPRESSION).
DO $compression$
DECLARE
    p regclass;
    c text;
BEGIN
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'paystream.audit_log'::regclass LOOP
        FOR c IN SELECT a.attname FROM pg_attribute a
                 WHERE a.attrelid = 'paystream.audit_log'::regclass AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attcompression = 'l' LOOP
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET COMPRESSION lz4', p, c);
        END LOOP;
    END LOOP;
END
$compression$;
COMMENT ON COLUMN paystream.audit_log.changes IS
    'Rows written before migration 18 only: their diffs as jsonb. Later rows keep <table>_old/<table>_new; '
    'read both through paystream.audit_trail.';

-- (Re)creates the trigger function of one audited table from paystream.audited_table and the
-- table's columns as they are now (the columns outside the whitelist are those named as
-- redacted). One statement per trigger event; each builds one audit row per 1,000 changed
-- rows (a bulk statement is split so that reading it back as jsonb stays under jsonb's cap).
-- Keys are never updated in paystream (UPDATEs join the old and new rows on them).
CREATE PROCEDURE paystream.audit_generate(p_table text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $gen$
DECLARE
    t paystream.audited_table;
    typ text;
    others text[];
    row_o text;
    row_n text;
    row_plain text;
    join_on text;
    changed text;
    redacted text;
BEGIN
    SELECT * INTO STRICT t FROM paystream.audited_table WHERE table_name = p_table;
    typ := format('paystream.%I', 'audit_' || t.table_name || '_row');
    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO others
    FROM pg_attribute a
    WHERE a.attrelid = format('paystream.%I', t.table_name)::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname::text <> ALL (t.keys) AND a.attname::text <> ALL (t.columns);
    SELECT string_agg(format('o.%I', c), ', ' ORDER BY ord), string_agg(format('n.%I', c), ', ' ORDER BY ord),
           format('ROW(%s, NULL)::%s', string_agg(format('r.%I', c), ', ' ORDER BY ord), typ)
      INTO row_o, row_n, row_plain FROM unnest(t.keys || t.columns) WITH ORDINALITY AS x(c, ord);
    SELECT string_agg(format('o.%I = n.%I', k, k), ' AND ') INTO join_on FROM unnest(t.keys) AS k;
    -- A row comparison is one expression over all whitelisted columns; it is what decides
    -- whether an UPDATE changed a row when nothing outside the whitelist changed.
    SELECT CASE WHEN cardinality(t.columns) = 0 THEN 'false'
                ELSE '(' || string_agg(format('o.%I', c), ', ') || ') IS DISTINCT FROM ('
                     || string_agg(format('n.%I', c), ', ') || ')' END
      INTO changed FROM unnest(t.columns) AS c;
    SELECT CASE WHEN cardinality(others) = 0 THEN 'NULL::text[]'
                ELSE 'nullif(array_remove(ARRAY['
                     || string_agg(format('CASE WHEN o.%I IS DISTINCT FROM n.%I THEN %L END', c, c, c), ', ')
                     || ']::text[], NULL), ''{}'')' END
      INTO redacted FROM unnest(others) AS c;

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION paystream.%1$I() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO paystream.audit_log (table_name, action, rows, %3$I, role, txid, at)
        SELECT %2$L, 'INSERT', count(*), array_agg(x.r), session_user, pg_current_xact_id(), now()
        FROM (SELECT %6$s AS r, (row_number() OVER () - 1) / 1000 AS chunk FROM new_rows r) x
        GROUP BY x.chunk;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO paystream.audit_log (table_name, action, rows, %4$I, %3$I, role, txid, at)
        SELECT %2$L, 'UPDATE', count(*), array_agg(x.o), array_agg(x.n), session_user, pg_current_xact_id(), now()
        FROM (SELECT ROW(%7$s, NULL)::%5$s AS o, ROW(%8$s, d.redacted)::%5$s AS n,
                     (row_number() OVER () - 1) / 1000 AS chunk
              FROM new_rows n JOIN old_rows o ON %9$s
              CROSS JOIN LATERAL (SELECT %11$s AS redacted) d
              -- A row that an UPDATE left as it was (SET x = x) is not a change.
              WHERE %10$s OR d.redacted IS NOT NULL) x
        GROUP BY x.chunk;
    ELSE
        INSERT INTO paystream.audit_log (table_name, action, rows, %4$I, role, txid, at)
        SELECT %2$L, 'DELETE', count(*), array_agg(x.r), session_user, pg_current_xact_id(), now()
        FROM (SELECT %6$s AS r, (row_number() OVER () - 1) / 1000 AS chunk FROM old_rows r) x
        GROUP BY x.chunk;
    END IF;
    RETURN NULL;
END
$body$$f$, 'audit_' || t.table_name, t.table_name, t.table_name || '_new', t.table_name || '_old', typ,
           row_plain, row_o, row_n, join_on, changed, redacted);
    EXECUTE format('REVOKE ALL ON FUNCTION paystream.%I() FROM PUBLIC', 'audit_' || t.table_name);
END
$gen$;
REVOKE ALL ON PROCEDURE paystream.audit_generate(text) FROM PUBLIC;

-- Migration 14's triggers call these functions by name: replacing them is enough.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT table_name FROM paystream.audited_table ORDER BY 1 LOOP
        CALL paystream.audit_generate(t);
    END LOOP;
END
$$;

-- An audit row's changes in migration 14's form, whichever way the row is stored: one element
-- per changed row, {"key", "new"} for an INSERT (every whitelisted column), {"key", "old"} for
-- a DELETE, {"key", "old", "new"} for an UPDATE (only the whitelisted columns that changed)
-- plus "redacted" when columns outside the whitelist changed. Times are rendered in UTC
-- whatever the session's time zone, so the text is the same for every reader (the seals hash
-- it).
CREATE FUNCTION paystream.audit_changes(a paystream.audit_log) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
SELECT coalesce(a.changes, (
    SELECT coalesce(jsonb_agg(
               CASE a.action
                   WHEN 'INSERT' THEN jsonb_build_object('key', e.n - w.columns - 'redacted',
                                                         'new', e.n - w.keys - 'redacted')
                   WHEN 'DELETE' THEN jsonb_build_object('key', e.o - w.columns - 'redacted',
                                                         'old', e.o - w.keys - 'redacted')
                   ELSE jsonb_build_object(
                            'key', e.n - w.columns - 'redacted',
                            'old', coalesce((SELECT jsonb_object_agg(c, e.o -> c) FROM unnest(w.columns) c
                                             WHERE e.o -> c IS DISTINCT FROM e.n -> c), '{}'),
                            'new', coalesce((SELECT jsonb_object_agg(c, e.n -> c) FROM unnest(w.columns) c
                                             WHERE e.o -> c IS DISTINCT FROM e.n -> c), '{}'))
                        || CASE WHEN jsonb_typeof(e.n -> 'redacted') = 'array'
                                THEN jsonb_build_object('redacted', e.n -> 'redacted') ELSE '{}' END
               END ORDER BY e.i), '[]'::jsonb)
    FROM paystream.audited_table w
    -- OFFSET 0 keeps the row converted once: pulled up, to_jsonb(a) would be recomputed for
    -- every element.
    CROSS JOIN LATERAL (SELECT nullif(r.j -> (a.table_name || '_old'), 'null') AS olds,
                               nullif(r.j -> (a.table_name || '_new'), 'null') AS news
                        FROM (SELECT to_jsonb(a) AS j OFFSET 0) r OFFSET 0) s
    CROSS JOIN LATERAL ROWS FROM (jsonb_array_elements(s.olds), jsonb_array_elements(s.news)) WITH ORDINALITY AS e(o, n, i)
    WHERE w.table_name = a.table_name))
$$;
REVOKE ALL ON FUNCTION paystream.audit_changes(paystream.audit_log) FROM PUBLIC;

-- The audit trail as auditors read it: every row with its changes as jsonb.
CREATE VIEW paystream.audit_trail AS
SELECT a.id, a.table_name, a.action, a.rows, paystream.audit_changes(a) AS changes, a.role, a.txid, a.at
FROM paystream.audit_log a;

-- One audit row as the text record a seal hashes. A row that holds only migration 14's
-- columns gives the very record it gave then (so days sealed before this migration still
-- verify); any other row gives its stored columns as jsonb text, every non-null one, so that
-- a change to any of them (even to an array its table does not use) changes the record.
CREATE FUNCTION paystream.audit_seal_record(a paystream.audit_log) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
SELECT concat_ws('|', 'audit', a.id, a.table_name, a.action, a.rows,
                 coalesce(s.stored::text, a.changes::text), a.role, a.txid::text,
                 (extract(epoch FROM a.at) * 1000000)::bigint)
FROM (SELECT (SELECT jsonb_object_agg(key, value ORDER BY key)
              FROM jsonb_each(to_jsonb(a) - ARRAY['id', 'table_name', 'action', 'rows', 'role', 'txid', 'at'])
              WHERE value <> 'null'::jsonb AND key <> 'changes') AS base) b
CROSS JOIN LATERAL (SELECT CASE WHEN b.base IS NULL THEN NULL
                                ELSE b.base || jsonb_build_object('changes', a.changes) END AS stored) s
$$;
REVOKE ALL ON FUNCTION paystream.audit_seal_record(paystream.audit_log) FROM PUBLIC;

INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.audit_trail'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.audited_table'),
    ('paystream_jobs', 'EXECUTE', 'FUNCTION', 'paystream.audit_changes(paystream.audit_log)'),
    ('paystream_jobs', 'EXECUTE', 'FUNCTION', 'paystream.audit_seal_record(paystream.audit_log)')
ON CONFLICT DO NOTHING;
