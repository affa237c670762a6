-- The ledger's journals and postings, range-partitioned by month like the audit log and the
-- charges (migration 16), with a DEFAULT partition as the safety net.
--
-- The partition key is the journal id itself. Every journal id the code writes is a UUID
-- version 7, whose first 48 bits are the Unix time in milliseconds, and UUIDs compare
-- bytewise: the ids of one month form one range, from the id of the month's first
-- millisecond with every other bit zero to the next month's. Partitioning by `created_at`
-- instead was measured (16 months and DEFAULT, 100 journals and 200 postings a statement):
-- the per-statement balance check's journal probe (migration 5) then visits every month's
-- index, +77% on the ledger's statements; and the keys would have to become (id,
-- created_at), unique only within a month. Keyed by id, the primary keys stay (id) and
-- (journal_id, line), unique over the whole ledger, and the probe, the postings' lookup by
-- journal and the processor's inserts each touch one month.
--
-- Journals written before this migration with ids that are not version 7 (the seed's ids
-- were MD5 digests until now) fall in no month: they stay in DEFAULT, which
-- `paystream.partition_default_rows` does not count for the ledger (only ids with a month,
-- `paystream.uuid_v7_month`, mean a month was missing there).
--
-- Months are not detached from the ledger: every balance is a sum over all postings, so
-- archiving a month would first need a journal carrying each account's balance forward.

SET LOCAL TimeZone = 'UTC';

-- The time a version-7 UUID holds; NULL for any other version.
CREATE FUNCTION paystream.uuid_v7_time(id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN get_byte(uuid_send(id), 6) >> 4 = 7
                THEN to_timestamp(('x' || lpad(left(replace(id::text, '-', ''), 12), 16, '0'))::bit(64)::bigint / 1000.0)
           END
$$;

-- The month of a version-7 UUID written by this system; NULL for other ids. An MD5 digest
-- or a random UUID carries the version bits 7 one time in sixteen, with a random time
-- anywhere from 1970 to the year 10889; the window keeps almost all of those out of the
-- months (one that falls in it is moved like any other row of its range, which is harmless).
CREATE FUNCTION paystream.uuid_v7_month(id uuid) RETURNS date
LANGUAGE sql STABLE STRICT PARALLEL SAFE SET TimeZone = 'UTC' AS $$
    SELECT date_trunc('month', t)::date
    FROM (SELECT paystream.uuid_v7_time(id) AS t) x
    WHERE t >= timestamptz '2020-01-01' AND t < now() + interval '5 years'
$$;

-- The smallest version-7 UUID of an instant's millisecond: a month's lower bound.
CREATE FUNCTION paystream.uuid_v7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (left(h, 8) || '-' || right(h, 4) || '-0000-0000-000000000000')::uuid
    FROM (SELECT lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') AS h) x
$$;

-- A version-7 UUID for `at` whose other bits come from `seed`: the same arguments give the
-- same id, for writers that must find their own rows again (the seed).
CREATE FUNCTION paystream.uuid_v7_from(at timestamptz, seed uuid) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(set_byte(set_byte(overlay(uuid_send(seed) PLACING substring(uuid_send(paystream.uuid_v7_floor(at)) FROM 1 FOR 6)
                                            FROM 1 FOR 6),
                                    6, (get_byte(uuid_send(seed), 6) & 15) | 112),
                           8, (get_byte(uuid_send(seed), 8) & 63) | 128), 'hex')::uuid
$$;

-- The old tables keep their data until it is copied; their names, constraints and indexes
-- step aside for the new ones.
ALTER TABLE paystream.journal RENAME TO journal_unpartitioned;
ALTER TABLE paystream.posting RENAME TO posting_unpartitioned;
ALTER TABLE paystream.journal_unpartitioned RENAME CONSTRAINT journal_pkey TO journal_unpartitioned_pkey;
ALTER TABLE paystream.posting_unpartitioned RENAME CONSTRAINT posting_pkey TO posting_unpartitioned_pkey;
ALTER INDEX paystream.journal_created_at_brin RENAME TO journal_unpartitioned_created_at_brin;
ALTER INDEX paystream.posting_account_idx RENAME TO posting_unpartitioned_account_idx;

CREATE TABLE paystream.journal (
    id          uuid NOT NULL,
    kind        text NOT NULL,
    reference   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE paystream.journal_default PARTITION OF paystream.journal DEFAULT;
CREATE INDEX journal_created_at_brin ON paystream.journal USING brin (created_at);

CREATE TABLE paystream.posting (
    journal_id  uuid NOT NULL,
    line        smallint NOT NULL,
    account     text NOT NULL,
    currency    char(3) NOT NULL,
    amount      numeric(20, 2) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (journal_id, line)
) PARTITION BY RANGE (journal_id);
CREATE TABLE paystream.posting_default PARTITION OF paystream.posting DEFAULT;
CREATE INDEX posting_account_idx ON paystream.posting (account, currency);

-- How a table's months are bounded: by the date or time in its key (the audit log, the
-- charges) or by the time in its version-7 UUID key (the ledger).
ALTER TABLE paystream.partitioned_table
    ADD COLUMN bound text NOT NULL DEFAULT 'date' CHECK (bound IN ('date', 'uuid_v7'));
INSERT INTO paystream.partitioned_table (name, key_column, clock, bound)
VALUES ('journal', 'id', 'wall', 'uuid_v7'), ('posting', 'journal_id', 'wall', 'uuid_v7');

-- A month's bound as a literal of the table's key type.
CREATE FUNCTION paystream.partition_bound(bound text, month date) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET TimeZone = 'UTC' AS $$
    SELECT CASE bound WHEN 'uuid_v7' THEN paystream.uuid_v7_floor(month::timestamptz)::text ELSE month::text END
$$;

-- The month of a key, as an SQL expression over the column (NULL: the key has no month).
CREATE FUNCTION paystream.partition_month_expr(bound text, key_column text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE bound
        WHEN 'uuid_v7' THEN format('paystream.uuid_v7_month(%I)', key_column)
        ELSE format('date_trunc(''month'', %I)::date', key_column) END
$$;

-- The ledger is append-only through its partitions too: statement-level triggers on a
-- partitioned table fire only for statements that name it, so updates and deletes are
-- refused row by row (row triggers are cloned to every partition, present and future; they
-- cost an insert nothing). The one exception is `maintain_partitions` moving rows out of
-- DEFAULT into their month, as the tables' owner, which says so for its transaction.
CREATE FUNCTION paystream.ledger_append_only_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('paystream.partition_move', true) = 'on'
       AND pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the ledger is append-only: % of %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

-- Months for the ids already written and this month and three ahead; the rows are copied
-- into them.
DO $copy$
DECLARE
    m date;
BEGIN
    FOR m IN
        SELECT DISTINCT paystream.uuid_v7_month(id) FROM paystream.journal_unpartitioned
        WHERE paystream.uuid_v7_month(id) IS NOT NULL
        UNION
        SELECT (date_trunc('month', current_date) + make_interval(months => k))::date FROM generate_series(0, 3) k
        ORDER BY 1
    LOOP
        EXECUTE format('CREATE TABLE paystream.%I PARTITION OF paystream.journal FOR VALUES FROM (%L) TO (%L)',
                       'journal_p' || to_char(m, 'YYYY_MM'), paystream.partition_bound('uuid_v7', m),
                       paystream.partition_bound('uuid_v7', (m + interval '1 month')::date));
        EXECUTE format('CREATE TABLE paystream.%I PARTITION OF paystream.posting FOR VALUES FROM (%L) TO (%L)',
                       'posting_p' || to_char(m, 'YYYY_MM'), paystream.partition_bound('uuid_v7', m),
                       paystream.partition_bound('uuid_v7', (m + interval '1 month')::date));
    END LOOP;
END
$copy$;

INSERT INTO paystream.journal (id, kind, reference, created_at)
SELECT id, kind, reference, created_at FROM paystream.journal_unpartitioned;
INSERT INTO paystream.posting (journal_id, line, account, currency, amount)
SELECT journal_id, line, account, currency, amount FROM paystream.posting_unpartitioned;

-- The checks after the copy: the copied postings were checked when first written.
CREATE TRIGGER posting_statement_check
AFTER INSERT ON paystream.posting
REFERENCING NEW TABLE AS new_postings
FOR EACH STATEMENT EXECUTE FUNCTION paystream.posting_statement_check();
CREATE TRIGGER journal_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON paystream.journal
FOR EACH STATEMENT EXECUTE FUNCTION paystream.ledger_append_only();
CREATE TRIGGER posting_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON paystream.posting
FOR EACH STATEMENT EXECUTE FUNCTION paystream.ledger_append_only();
CREATE TRIGGER journal_append_only_row
BEFORE UPDATE OR DELETE ON paystream.journal
FOR EACH ROW EXECUTE FUNCTION paystream.ledger_append_only_row();
CREATE TRIGGER posting_append_only_row
BEFORE UPDATE OR DELETE ON paystream.posting
FOR EACH ROW EXECUTE FUNCTION paystream.ledger_append_only_row();

-- The contract views read the new tables (same columns, same meaning).
CREATE OR REPLACE VIEW paystream.trial_balance AS
SELECT p.currency,
       coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)  AS debits,
       coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0) AS credits
FROM paystream.posting p
GROUP BY p.currency;

CREATE OR REPLACE VIEW paystream.account_balances AS
SELECT p.account, p.currency, sum(p.amount) AS balance
FROM paystream.posting p
GROUP BY p.account, p.currency;

-- A DROP is not refused by the append-only triggers (they guard rows, and the old tables'
-- go with them); the rows live on in the new tables.
DROP TABLE paystream.posting_unpartitioned;
DROP TABLE paystream.journal_unpartitioned;

-- DEFAULT's rows per table; for the ledger only ids with a month (`uuid_v7_month`) count.
CREATE OR REPLACE VIEW paystream.partition_default_rows AS
SELECT 'audit_log'::text AS parent, count(*) AS rows, min(at)::date AS oldest FROM paystream.audit_log_default
UNION ALL
SELECT 'charge', count(*), min(business_date) FROM paystream.charge_default
UNION ALL
SELECT 'journal', count(*), min(paystream.uuid_v7_month(id))
FROM paystream.journal_default WHERE paystream.uuid_v7_month(id) IS NOT NULL
UNION ALL
SELECT 'posting', count(*), min(paystream.uuid_v7_month(journal_id))
FROM paystream.posting_default WHERE paystream.uuid_v7_month(journal_id) IS NOT NULL;

-- Migration 16's maintenance, with each table's bounds and months from `bound`.
CREATE OR REPLACE FUNCTION paystream.maintain_partitions(months_ahead integer DEFAULT 3)
RETURNS TABLE (parent text, partition text, action text, moved bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, paystream SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    m date;
    first_month date;
    name text;
    month_of text;
    n bigint;
BEGIN
    IF months_ahead < 0 OR months_ahead > 36 THEN
        RAISE EXCEPTION 'months_ahead must be 0..36, not %', months_ahead USING ERRCODE = '22023';
    END IF;
    -- Lets the ledger's append-only row triggers pass this transaction's moves (as the owner).
    PERFORM set_config('paystream.partition_move', 'on', true);
    FOR t IN SELECT * FROM paystream.partitioned_table ORDER BY 1 LOOP
        -- Lock the parent: no insert lands in DEFAULT between the move and the attach.
        EXECUTE format('LOCK TABLE paystream.%I IN SHARE ROW EXCLUSIVE MODE', t.name);
        month_of := paystream.partition_month_expr(t.bound, t.key_column);
        FOR m IN EXECUTE format('SELECT DISTINCT %s FROM paystream.%I WHERE %s IS NOT NULL ORDER BY 1',
                                month_of, t.name || '_default', month_of) LOOP
            name := format('%s_p%s', t.name, to_char(m, 'YYYY_MM'));
            EXECUTE format('CREATE TABLE paystream.%I (LIKE paystream.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                           'INCLUDING STORAGE INCLUDING COMPRESSION)', name, t.name);
            EXECUTE format('WITH moved AS (DELETE FROM paystream.%I WHERE %I >= %L AND %I < %L RETURNING *) '
                           'INSERT INTO paystream.%I SELECT * FROM moved',
                           t.name || '_default', t.key_column, paystream.partition_bound(t.bound, m),
                           t.key_column, paystream.partition_bound(t.bound, (m + interval '1 month')::date), name);
            GET DIAGNOSTICS n = ROW_COUNT;
            EXECUTE format('ALTER TABLE paystream.%I ATTACH PARTITION paystream.%I FOR VALUES FROM (%L) TO (%L)',
                           t.name, name, paystream.partition_bound(t.bound, m),
                           paystream.partition_bound(t.bound, (m + interval '1 month')::date));
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
                               name, t.name, paystream.partition_bound(t.bound, m),
                               paystream.partition_bound(t.bound, (m + interval '1 month')::date));
                parent := t.name; partition := name; action := 'created'; moved := 0;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
    PERFORM set_config('paystream.partition_move', 'off', true);
END
$$;

-- Migration 16's detach, reading each month from the partition's name (a ledger bound is a
-- UUID, not a date) and never the ledger's (see the top of this file).
CREATE OR REPLACE FUNCTION paystream.detach_partitions_before(before date)
RETURNS TABLE (parent text, partition text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, paystream SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    p record;
BEGIN
    FOR t IN SELECT * FROM paystream.partitioned_table WHERE bound = 'date' ORDER BY 1 LOOP
        FOR p IN
            SELECT c.relname, (to_date(right(c.relname, 7), 'YYYY_MM') + interval '1 month')::date AS upper
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('paystream.%I', t.name)::regclass
              AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
              AND c.relname ~ '_p[0-9]{4}_[0-9]{2}$'
            ORDER BY c.relname
        LOOP
            IF p.upper <= before THEN
                EXECUTE format('ALTER TABLE paystream.%I DETACH PARTITION paystream.%I', t.name, p.relname);
                parent := t.name; partition := p.relname;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;
