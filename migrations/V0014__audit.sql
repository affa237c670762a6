-- The audit trail: every change to contracts, installments, payments, reversals and customers,
-- as ids and the changed columns' old and new values, from a whitelist per table. Personal
-- data (a customer's name, CPF, email, phone) is never in the whitelist, so it never reaches
-- the log; a column added to a table later is not audited until it is listed here on purpose.
--
-- Written by statement-level AFTER triggers over transition tables: one INSERT ... SELECT per
-- statement of the processor's set-based batches, not one trigger call per row. The trigger
-- function is SECURITY DEFINER, owned by paystream_owner: service roles hold no privilege on
-- audit_log, so they can neither write it directly nor remove what it holds.
CREATE TABLE paystream.audit_log (
    id bigserial PRIMARY KEY,
    table_name text NOT NULL,
    -- The row's key columns, e.g. {"id": "..."} or {"provider": "...", "provider_payment_id": "..."}.
    row_key jsonb NOT NULL,
    action text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    -- {"column": {"old": ..., "new": ...}} for the whitelisted columns that changed (an INSERT
    -- has only "new", a DELETE only "old"); {"column": {"redacted": true}} for any other
    -- column an UPDATE changed.
    changes jsonb NOT NULL,
    -- The login role of the session. Inside the SECURITY DEFINER trigger current_user is the
    -- owner, so the session's user is what names who made the change.
    role name NOT NULL,
    txid xid8 NOT NULL,
    at timestamptz NOT NULL
);
-- Seals read one day at a time; a BRIN index costs the inserts almost nothing (rows arrive in
-- time order).
CREATE INDEX audit_log_at_brin ON paystream.audit_log USING brin (at);

-- `cols` of the row `j` as a jsonb object.
CREATE FUNCTION paystream.audit_pick(j jsonb, cols text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(c, j -> c), '{}'::jsonb) FROM unnest(cols) AS c
$$;

-- TG_ARGV[0]: the key columns, comma-separated; TG_ARGV[1]: the audited (whitelisted) columns.
CREATE FUNCTION paystream.audit_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys constant text[] := string_to_array(TG_ARGV[0], ',');
    cols constant text[] := string_to_array(TG_ARGV[1], ',');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO paystream.audit_log (table_name, row_key, action, changes, role, txid, at)
        SELECT TG_TABLE_NAME, paystream.audit_pick(n.j, keys), 'INSERT',
               (SELECT coalesce(jsonb_object_agg(c, jsonb_build_object('new', n.j -> c)), '{}'::jsonb)
                FROM unnest(cols) AS c),
               session_user, pg_current_xact_id(), now()
        FROM (SELECT to_jsonb(r) AS j FROM new_rows r) n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO paystream.audit_log (table_name, row_key, action, changes, role, txid, at)
        SELECT TG_TABLE_NAME, n.k, 'UPDATE', d.changes, session_user, pg_current_xact_id(), now()
        FROM (SELECT paystream.audit_pick(to_jsonb(r), keys) AS k, to_jsonb(r) AS j FROM new_rows r) n
        JOIN (SELECT paystream.audit_pick(to_jsonb(r), keys) AS k, to_jsonb(r) AS j FROM old_rows r) o
          ON o.k = n.k
        -- A changed column outside the whitelist (a customer's personal data) is named, so the
        -- change itself is on record, but its values are not.
        CROSS JOIN LATERAL (
            SELECT jsonb_object_agg(e.key, CASE WHEN e.key = ANY (cols)
                                                THEN jsonb_build_object('old', o.j -> e.key, 'new', e.value)
                                                ELSE '{"redacted": true}'::jsonb END) AS changes
            FROM jsonb_each(n.j) AS e
            WHERE o.j -> e.key IS DISTINCT FROM e.value) d
        -- An UPDATE that changed nothing (SET x = x) leaves no row.
        WHERE d.changes IS NOT NULL;
    ELSE
        INSERT INTO paystream.audit_log (table_name, row_key, action, changes, role, txid, at)
        SELECT TG_TABLE_NAME, paystream.audit_pick(o.j, keys), 'DELETE',
               (SELECT coalesce(jsonb_object_agg(c, jsonb_build_object('old', o.j -> c)), '{}'::jsonb)
                FROM unnest(cols) AS c),
               session_user, pg_current_xact_id(), now()
        FROM (SELECT to_jsonb(r) AS j FROM old_rows r) o;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION paystream.audit_changes() FROM PUBLIC;

-- One trigger per table and event: a trigger with transition tables fires for one event only
-- when OLD and NEW TABLE are both named, and INSERT has no OLD TABLE.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('contract', 'id', 'customer_id,currency,principal,status,version,created_at,settled_at'),
        ('installment', 'id', 'contract_id,seq,due_date,currency,amount_due,amount_paid,status,version,paid_at'),
        ('payment', 'provider,provider_payment_id',
         'installment_id,rail,amount,currency,status,reason,amount_applied,amount_credited,amount_reversed,'
         'amount_refunded,journal_id,occurred_at,source_partition,source_offset'),
        ('reversal', 'provider,reversal_id',
         'provider_payment_id,kind,amount,applied_amount,status,reason,journal_id,reversed_at'),
        -- Never name, tax_id, email or phone.
        ('customer', 'id', 'created_at,anonymised_at')) AS v(name, keys, cols)
    LOOP
        EXECUTE format('CREATE TRIGGER audit_insert AFTER INSERT ON paystream.%I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION paystream.audit_changes(%L, %L)', t.name, t.keys, t.cols);
        EXECUTE format('CREATE TRIGGER audit_update AFTER UPDATE ON paystream.%I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION paystream.audit_changes(%L, %L)', t.name, t.keys, t.cols);
        EXECUTE format('CREATE TRIGGER audit_delete AFTER DELETE ON paystream.%I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION paystream.audit_changes(%L, %L)', t.name, t.keys, t.cols);
    END LOOP;
END
$$;

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
