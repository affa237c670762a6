-- Roles and least privilege. Until now every service ran as the superuser, so any of them could
-- switch the append-only ledger triggers off (ALTER TABLE ... DISABLE TRIGGER) or read the
-- customers' personal data. From here on:
--   paystream_owner           NOLOGIN; owns the schema and every object in it (DDL only, by
--                             migrations run as a superuser or a member of it)
--   paystream_processor       LOGIN; the processor: applies commands, writes ledger and outbox
--   paystream_relay           LOGIN; the outbox relay: reads and deletes the outbox
--   paystream_jobs            LOGIN; batch jobs (accrual, maintenance) and operator commands
--                             (dead-letter re-drive, payment lookup, report, audit seal)
--   paystream_reader          LOGIN; the SQL contract views only (SREs, auditors, dashboards)
--   paystream_pii             LOGIN; the only role that reads customers' personal columns
--   paystream_provider_reader NOLOGIN group; its members read the payments of the providers
--                             paystream.provider_reader_scope maps them to (row-level security)
-- Ingest has no database access at all.
--
-- Roles are cluster-wide while migrations run per database (the tests migrate many databases
-- in one cluster), so each role is created only when missing, and a concurrent creation by
-- another database's migration is not an error. Attributes are set every time, so that a role
-- that existed with more power (SUPERUSER, BYPASSRLS) is brought down to what it must have.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('paystream_owner', false),
        ('paystream_processor', true),
        ('paystream_relay', true),
        ('paystream_jobs', true),
        ('paystream_reader', true),
        ('paystream_pii', true),
        ('paystream_provider_reader', false)) AS v(name, login)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I', r.name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- another database's migration created it a moment ago
            END;
        END IF;
        EXECUTE format('ALTER ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                       r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END);
    END LOOP;
END
$$;

-- Per-role timeouts, for sessions that do not set their own (psql, ad-hoc tools): the
-- services set both from postgres.statement_timeout_ms and idle_in_transaction_timeout_ms at
-- connection time, which takes precedence. Jobs run set-based batches over the whole book, so
-- they get longer statements; nobody may sit in an open transaction holding locks for long.
ALTER ROLE paystream_processor SET statement_timeout = '30s';
ALTER ROLE paystream_processor SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE paystream_relay SET statement_timeout = '30s';
ALTER ROLE paystream_relay SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE paystream_jobs SET statement_timeout = '10min';
ALTER ROLE paystream_jobs SET idle_in_transaction_session_timeout = '5min';
ALTER ROLE paystream_reader SET statement_timeout = '60s';
ALTER ROLE paystream_reader SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE paystream_pii SET statement_timeout = '30s';
ALTER ROLE paystream_pii SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE paystream_provider_reader SET statement_timeout = '60s';
ALTER ROLE paystream_provider_reader SET idle_in_transaction_session_timeout = '60s';

-- Nobody but the owner creates objects anywhere paystream looks.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Which provider(s) each member of paystream_provider_reader may see. Only the owner (a
-- migration, an operator as superuser) writes it; members read it because the payment policy
-- below consults it in their name.
CREATE TABLE paystream.provider_reader_scope (
    role_name name NOT NULL,
    provider text NOT NULL,
    PRIMARY KEY (role_name, provider)
);

-- Row-level security on payment: the services see every row (their policies are `true`, which
-- the planner drops, so the hot path pays nothing); a provider reader sees only rows of the
-- providers mapped to its login role. The owner is not subject to it (no FORCE): views owned
-- by it, such as the contract views, keep reading every row.
ALTER TABLE paystream.payment ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_services ON paystream.payment
    TO paystream_processor, paystream_jobs, paystream_pii
    USING (true) WITH CHECK (true);
CREATE POLICY payment_provider_reader ON paystream.payment
    FOR SELECT TO paystream_provider_reader
    USING (provider IN (SELECT s.provider FROM paystream.provider_reader_scope s WHERE s.role_name = current_user));

-- The grants, as data: one row per (role, privilege clause, object). `privilege` is the
-- clause of GRANT as written (`SELECT, INSERT`, `UPDATE (status, version)`). A later migration
-- that adds a table adds its rows here (INSERT ... ON CONFLICT DO NOTHING); the migration
-- runner calls paystream.apply_role_privileges() after every run, so the order in which
-- migrations were applied does not matter. Rows for objects that do not exist (yet) are
-- skipped.
CREATE TABLE paystream.role_privilege (
    grantee name NOT NULL,
    privilege text NOT NULL,
    object_type text NOT NULL DEFAULT 'TABLE' CHECK (object_type IN ('TABLE', 'SEQUENCE', 'FUNCTION')),
    object text NOT NULL,
    PRIMARY KEY (grantee, object, privilege)
);

INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    -- processor: what processor/sql/*.sql does, nothing more. SELECT ... FOR UPDATE needs
    -- UPDATE on one column at least; pending_reversal is locked, never updated, but its rows
    -- may be deleted anyway, so UPDATE on it gives nothing more.
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.consumer_position'),
    ('paystream_processor', 'UPDATE (next_offset, updated_at)', 'TABLE', 'paystream.consumer_position'),
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.contract'),
    ('paystream_processor', 'UPDATE (status, settled_at, version)', 'TABLE', 'paystream.contract'),
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.installment'),
    ('paystream_processor', 'UPDATE (amount_paid, late_fee_paid, interest_paid, status, version, paid_at)', 'TABLE',
     'paystream.installment'),
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.payment'),
    ('paystream_processor', 'UPDATE (amount_reversed, amount_credited, amount_refunded, applied_late_fee, applied_interest, status)',
     'TABLE', 'paystream.payment'),
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.reversal'),
    ('paystream_processor', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE', 'paystream.pending_reversal'),
    -- The ledger is append-only: INSERT and SELECT, never UPDATE or DELETE (the triggers also
    -- refuse them, and no service role owns the tables, so none can switch the triggers off).
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.journal'),
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.posting'),
    ('paystream_processor', 'SELECT, INSERT', 'TABLE', 'paystream.outbox'),
    ('paystream_processor', 'USAGE', 'SEQUENCE', 'paystream.outbox_id_seq'),
    -- INSERT ... ON CONFLICT (source_topic, source_partition, source_offset) reads the
    -- conflict target's columns.
    ('paystream_processor', 'INSERT', 'TABLE', 'paystream.dead_letter'),
    ('paystream_processor', 'SELECT (source_topic, source_partition, source_offset)', 'TABLE', 'paystream.dead_letter'),
    ('paystream_processor', 'USAGE', 'SEQUENCE', 'paystream.dead_letter_id_seq'),
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.outbox_backlog'),
    -- relay: the outbox and its parking lot; the backlog view for its gauges.
    ('paystream_relay', 'SELECT, DELETE', 'TABLE', 'paystream.outbox'),
    ('paystream_relay', 'UPDATE (frames, events)', 'TABLE', 'paystream.outbox'),
    ('paystream_relay', 'INSERT', 'TABLE', 'paystream.outbox_parked'),
    ('paystream_relay', 'USAGE', 'SEQUENCE', 'paystream.outbox_parked_id_seq'),
    ('paystream_relay', 'SELECT', 'TABLE', 'paystream.outbox_backlog'),
    -- jobs: read everything but personal data; re-drive dead letters; batch jobs add their
    -- tables' rows in their own migrations.
    ('paystream_jobs', 'SELECT (id, created_at, anonymised_at)', 'TABLE', 'paystream.customer'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.contract'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.installment'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.payment'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.reversal'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.pending_reversal'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.journal'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.posting'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.outbox'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.outbox_parked'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.consumer_position'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.dead_letter'),
    ('paystream_jobs', 'UPDATE (redriven_at, redrive_count, redrive_partition, redrive_offset)', 'TABLE', 'paystream.dead_letter'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.schema_migration'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.trial_balance'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.account_balances'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.outbox_backlog'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.dead_letters'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.installments'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.parked_events'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.pending_reversals'),
    -- jobs, for the accrual and maintenance work of migrations 9 to 12 (skipped until their
    -- objects exist): the business date, accrued charges, installments' status and version
    -- (optimistic concurrency against the processor), their events through the outbox.
    ('paystream_jobs', 'SELECT, INSERT, UPDATE', 'TABLE', 'paystream.business_date'),
    ('paystream_jobs', 'SELECT, INSERT', 'TABLE', 'paystream.charge'),
    ('paystream_jobs', 'USAGE', 'SEQUENCE', 'paystream.charge_id_seq'),
    ('paystream_jobs', 'UPDATE (status, version, late_fee, interest, accrued_through, overdue_since)', 'TABLE',
     'paystream.installment'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.holiday'),
    ('paystream_jobs', 'SELECT, INSERT, UPDATE', 'TABLE', 'paystream.accrual_run'),
    -- Charges, renegotiations: journals and postings appended, never changed.
    ('paystream_jobs', 'INSERT', 'TABLE', 'paystream.journal'),
    ('paystream_jobs', 'INSERT', 'TABLE', 'paystream.posting'),
    -- Renegotiation: the new contract and its schedule; the old contract's status.
    ('paystream_jobs', 'INSERT', 'TABLE', 'paystream.contract'),
    ('paystream_jobs', 'UPDATE (status, version)', 'TABLE', 'paystream.contract'),
    ('paystream_jobs', 'INSERT', 'TABLE', 'paystream.installment'),
    ('paystream_jobs', 'INSERT', 'TABLE', 'paystream.outbox'),
    ('paystream_jobs', 'USAGE', 'SEQUENCE', 'paystream.outbox_id_seq'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.delinquency'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.delinquency'),
    -- reader: the SQL contract views (design section 5) and nothing under them.
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.trial_balance'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.account_balances'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.outbox_backlog'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.dead_letters'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.installments'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.parked_events'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.pending_reversals'),
    -- pii: the customer row, personal columns included.
    ('paystream_pii', 'SELECT', 'TABLE', 'paystream.customer'),
    ('paystream_pii', 'SELECT', 'TABLE', 'paystream.contract'),
    -- provider readers: payments, filtered by the policy above.
    ('paystream_provider_reader', 'SELECT', 'TABLE', 'paystream.payment'),
    ('paystream_provider_reader', 'SELECT', 'TABLE', 'paystream.provider_reader_scope');

-- Brings ownership and grants to what the migrations declare: every object of the schema is
-- owned by paystream_owner, the service roles hold exactly the rows of role_privilege (all
-- their table and sequence privileges are revoked first, so a removed row takes effect), and
-- PUBLIC holds nothing on the tables. Idempotent; run as a superuser (the migration runner).
CREATE PROCEDURE paystream.apply_role_privileges()
LANGUAGE plpgsql AS $$
DECLARE
    o record;
    roles constant text := 'PUBLIC, paystream_processor, paystream_relay, paystream_jobs, paystream_reader, '
                           'paystream_pii, paystream_provider_reader';
BEGIN
    ALTER SCHEMA paystream OWNER TO paystream_owner;
    -- Tables, views and partitions first: a serial's sequence follows its table and cannot be
    -- given away on its own, so sequences are taken afterwards, from a fresh look.
    FOR o IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
             WHERE c.relnamespace = 'paystream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
               AND c.relowner <> 'paystream_owner'::regrole
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO paystream_owner',
                       CASE o.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, o.name);
    END LOOP;
    FOR o IN SELECT c.oid::regclass AS name FROM pg_class c
             WHERE c.relnamespace = 'paystream'::regnamespace AND c.relkind = 'S'
               AND c.relowner <> 'paystream_owner'::regrole
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO paystream_owner', o.name);
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure AS name FROM pg_proc p
             WHERE p.pronamespace = 'paystream'::regnamespace AND p.proowner <> 'paystream_owner'::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO paystream_owner', o.name);
    END LOOP;
    FOR o IN SELECT t.oid::regtype AS name FROM pg_type t
             WHERE t.typnamespace = 'paystream'::regnamespace AND t.typowner <> 'paystream_owner'::regrole
               AND (t.typtype IN ('e', 'd', 'r')
                    OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO paystream_owner', o.name);
    END LOOP;

    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA paystream FROM %s', roles);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA paystream FROM %s', roles);
    EXECUTE format('REVOKE ALL ON SCHEMA paystream FROM %s', roles);
    EXECUTE 'GRANT USAGE ON SCHEMA paystream TO paystream_processor, paystream_relay, paystream_jobs, '
            'paystream_reader, paystream_pii, paystream_provider_reader';
    FOR o IN SELECT g.* FROM paystream.role_privilege g
             WHERE CASE g.object_type WHEN 'FUNCTION' THEN to_regprocedure(g.object) IS NOT NULL
                                      ELSE to_regclass(g.object) IS NOT NULL END
             ORDER BY g.grantee, g.object, g.privilege
    LOOP
        EXECUTE format('GRANT %s ON %s %s TO %I', o.privilege, o.object_type, o.object, o.grantee);
    END LOOP;
END
$$;

-- Not called here: the migration runner calls it once every migration is applied, so that a
-- row may name a column that a later migration adds (V0017's re-drive columns) and objects of
-- migrations applied after this one are covered too.
