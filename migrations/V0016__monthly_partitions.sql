-- Monthly partitions that cannot fail an insert: the audit log (by `at`, UTC months) and the
-- accrual charges (by business date) are range-partitioned by month (migrations 14 and 9
-- create them so, each with a DEFAULT partition as the safety net); this adds the months. A
-- month nobody created in time costs nothing at midnight: its rows land in DEFAULT, `paystream.partition_default_rows` shows them (and the alert on it
-- fires), and `paystream partitions maintain` moves them into their month, which it attaches
-- (a month cannot be attached while DEFAULT holds rows of it), and keeps three months ahead.
-- Old months are detached for archiving past retention (`paystream partitions detach`).
--
-- Own functions rather than pg_partman: two tables, one rule (months, a DEFAULT, moves out of
-- it), and no extension for every deployment to install, upgrade and grant; pg_partman's
-- background worker and its configuration tables would be the larger part of the change.
--
-- The ledger's journals and postings are not partitioned here: their append-only and
-- per-statement balance triggers and the payments' journal references would all have to be
-- rebuilt around a partition key; it is left for the ledger's next format.

SET LOCAL TimeZone = 'UTC';

-- The partitioned tables and their keys, for the functions below.
CREATE TABLE paystream.partitioned_table (
    name text PRIMARY KEY,
    key_column text NOT NULL,
    -- Which clock says what "this month" is: the wall clock (audit) or the business date.
    clock text NOT NULL CHECK (clock IN ('wall', 'business'))
);
INSERT INTO paystream.partitioned_table VALUES ('audit_log', 'at', 'wall'), ('charge', 'business_date', 'business');

-- Rows sitting in a DEFAULT partition, per table: zero unless a month was missing.
CREATE VIEW paystream.partition_default_rows AS
SELECT 'audit_log'::text AS parent, count(*) AS rows, min(at)::date AS oldest FROM paystream.audit_log_default
UNION ALL
SELECT 'charge', count(*), min(business_date) FROM paystream.charge_default;

-- Moves rows out of each DEFAULT partition into their months (creating and attaching them),
-- then creates the months from this month (the wall clock's, or the earliest business date's)
-- to `months_ahead` after it. One row per partition touched. SECURITY DEFINER, owned by the
-- owner (who alone may create and attach partitions): the jobs role runs it.
CREATE FUNCTION paystream.maintain_partitions(months_ahead integer DEFAULT 3)
RETURNS TABLE (parent text, partition text, action text, moved bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, paystream SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    m date;
    first_month date;
    name text;
    n bigint;
BEGIN
    IF months_ahead < 0 OR months_ahead > 36 THEN
        RAISE EXCEPTION 'months_ahead must be 0..36, not %', months_ahead USING ERRCODE = '22023';
    END IF;
    FOR t IN SELECT * FROM paystream.partitioned_table ORDER BY 1 LOOP
        -- Lock the parent: no insert lands in DEFAULT between the move and the attach.
        EXECUTE format('LOCK TABLE paystream.%I IN SHARE ROW EXCLUSIVE MODE', t.name);
        FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I)::date FROM paystream.%I ORDER BY 1',
                                t.key_column, t.name || '_default') LOOP
            name := format('%s_p%s', t.name, to_char(m, 'YYYY_MM'));
            EXECUTE format('CREATE TABLE paystream.%I (LIKE paystream.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                           'INCLUDING STORAGE INCLUDING COMPRESSION)', name, t.name);
            EXECUTE format('WITH moved AS (DELETE FROM paystream.%I WHERE %I >= %L AND %I < %L RETURNING *) '
                           'INSERT INTO paystream.%I SELECT * FROM moved',
                           t.name || '_default', t.key_column, m, t.key_column, (m + interval '1 month')::date, name);
            GET DIAGNOSTICS n = ROW_COUNT;
            EXECUTE format('ALTER TABLE paystream.%I ATTACH PARTITION paystream.%I FOR VALUES FROM (%L) TO (%L)',
                           t.name, name, m, (m + interval '1 month')::date);
            parent := t.name; partition := name; action := 'moved out of default, attached'; moved := n;
            RETURN NEXT;
        END LOOP;
        first_month := date_trunc('month', CASE t.clock
            WHEN 'wall' THEN current_date
            ELSE coalesce((SELECT min(b.business_date) FROM paystream.business_date b), current_date) END)::date;
        FOR k IN 0..months_ahead LOOP
            m := (first_month + make_interval(months => k))::date;
            name := format('%s_p%s', t.name, to_char(m, 'YYYY_MM'));
            IF to_regclass(format('paystream.%I', name)) IS NULL THEN
                EXECUTE format('CREATE TABLE paystream.%I PARTITION OF paystream.%I FOR VALUES FROM (%L) TO (%L)',
                               name, t.name, m, (m + interval '1 month')::date);
                parent := t.name; partition := name; action := 'created'; moved := 0;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Detaches the months that end on or before `before` (their rows past retention), leaving
-- each a table of its own to archive (pg_dump -t) and drop. Never DEFAULT.
CREATE FUNCTION paystream.detach_partitions_before(before date)
RETURNS TABLE (parent text, partition text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, paystream SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    p record;
BEGIN
    FOR t IN SELECT * FROM paystream.partitioned_table ORDER BY 1 LOOP
        FOR p IN
            SELECT c.relname, substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)') AS upper
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('paystream.%I', t.name)::regclass
              AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
            ORDER BY c.relname
        LOOP
            IF p.upper::date <= before THEN
                EXECUTE format('ALTER TABLE paystream.%I DETACH PARTITION paystream.%I', t.name, p.relname);
                parent := t.name; partition := p.relname;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Functions are executable by PUBLIC unless revoked: these two run as the owner.
REVOKE EXECUTE ON FUNCTION paystream.maintain_partitions(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION paystream.detach_partitions_before(date) FROM PUBLIC;

SELECT * FROM paystream.maintain_partitions(3);

INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    ('paystream_jobs', 'EXECUTE', 'FUNCTION', 'paystream.maintain_partitions(integer)'),
    ('paystream_jobs', 'EXECUTE', 'FUNCTION', 'paystream.detach_partitions_before(date)'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.partition_default_rows'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.partition_default_rows'),
    -- The processor samples it for the alert (PaystreamPartitionDefaultRows).
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.partition_default_rows')
ON CONFLICT DO NOTHING;
