-- The seed systems' design, the baseline paystream is measured against: a webhook handler
-- calls one PL/pgSQL function per payment, each call a transaction of its own, and a polling
-- relay publishes an outbox of one row per event.
--
-- bench_seed.apply_payment does per payment what paystream's processor does per payment:
-- dedupe on the provider's id, SELECT ... FOR UPDATE on the installment, the installment's
-- update, the payment row, a balanced journal with its postings, InstallmentPaid and the
-- contract's settlement when the last money arrives, and its events as Avro single-object
-- records, the bytes that go on the wire. Payments, installments and contracts are
-- paystream's own tables (the same data, the same dedupe keys; the load generator picks the
-- installments both pay). Two things are the seeds' own:
--
-- * the outbox: one row per event, where paystream's holds a transaction's events of a lane
--   in one framed row;
-- * the ledger's tables: a journal and its postings, as the seeds describe a ledger and as
--   paystream's were up to migration 22 (same columns, keys, indexes and checks), whose
--   postings are checked against their journal by a foreign key, a probe per posting, as
--   paystream's first migration had it. paystream now writes one transfer row a payment
--   (migration 22); the seeds' design keeps the rows it describes. paystream's per-statement
--   check (migration 5) is made for batches: on a statement of one payment's two postings it
--   costs more than the foreign key (measured, a journal and its postings: 126 us with it,
--   82 us with the key, 50 us with neither), which would count against the seeds what only
--   paystream's batching pays for. The function writes balanced journals by construction,
--   as the processor does (ledger::Journal::check).
--
-- Where the seeds' design left a choice open, the one cheaper for the database was taken:
-- the outbox has no index but its key, event ids are random (nothing derives them).
--
-- Created by the bench (and by `paystream-bench seed-server`) in a schema of its own, never by
-- the product's migrations. Idempotent; `DROP SCHEMA bench_seed CASCADE` removes it all.

CREATE SCHEMA IF NOT EXISTS bench_seed;

CREATE TABLE IF NOT EXISTS bench_seed.outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text NOT NULL,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS bench_seed.journal (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    reference   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS journal_created_at_brin ON bench_seed.journal USING brin (created_at);
CREATE TABLE IF NOT EXISTS bench_seed.posting (
    journal_id  uuid NOT NULL REFERENCES bench_seed.journal (id),
    line        smallint NOT NULL,
    account     text NOT NULL,
    currency    char(3) NOT NULL,
    amount      numeric(20, 2) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (journal_id, line)
);
CREATE INDEX IF NOT EXISTS posting_account_idx ON bench_seed.posting (account, currency);

-- A queue table: every row is inserted once and deleted within moments. Vacuumed after a
-- fixed count of dead rows, as paystream's outbox is (migration 3).
ALTER TABLE bench_seed.outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);

-- A time-ordered UUID (version 7), as the processor's journal ids are: keys appended at the
-- right edge of the journal's and postings' B-trees, not scattered over them.
CREATE OR REPLACE FUNCTION bench_seed.uuid7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Avro's zig-zag varint `long`, for |v| < 2^62 (timestamps in ms, lengths).
CREATE OR REPLACE FUNCTION bench_seed.avro_long(v bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    z bigint := (v << 1) # (v >> 63);
    out bytea := '';
BEGIN
    WHILE z >= 128 LOOP
        out := out || set_byte('\x00'::bytea, 0, ((z & 127) | 128)::int);
        z := z >> 7;
    END LOOP;
    RETURN out || set_byte('\x00'::bytea, 0, z::int);
END
$$;

-- An Avro `string`: its length, then its UTF-8 bytes. Lengths under 64 are one byte, without
-- a call to avro_long. Plain SQL, not STRICT and STABLE like convert_to, so that the planner
-- inlines it into the calling expression (a function declared IMMUTABLE over a STABLE one is
-- not inlined: measured, 3.5 us a call instead of next to nothing).
CREATE OR REPLACE FUNCTION bench_seed.avro_string(t text) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN octet_length(t) < 64 THEN set_byte('\x00'::bytea, 0, 2 * octet_length(t))
                ELSE bench_seed.avro_long(octet_length(t)) END
           || convert_to(t, 'UTF8')
$$;

-- An Avro `["null", "string"]` union.
CREATE OR REPLACE FUNCTION bench_seed.avro_opt_string(t text) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t IS NULL THEN '\x00'::bytea ELSE '\x02'::bytea || bench_seed.avro_string(t) END
$$;

-- The contract's `amount`: decimal(20, 2) as 9 bytes of big-endian two's complement (the
-- fixed width paystream_schemas writes), after its length.
CREATE OR REPLACE FUNCTION bench_seed.avro_amount(amount numeric) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT '\x12'::bytea || CASE WHEN amount < 0 THEN '\xff'::bytea ELSE '\x00'::bytea END
           || int8send((amount * 100)::bigint)
$$;

-- A PaymentEvent (schemas/avro/PaymentEvent.avsc) in single-object encoding: `header` is the
-- marker and the schema's fingerprint (10 bytes, given by the caller, which has the schema),
-- then the fields in order. PL/pgSQL, not SQL: a SQL function that is not inlined has its body
-- planned again at every call (measured: 417 us a call), where PL/pgSQL plans its expression
-- once per session, with the SQL helpers above inlined into it.
CREATE OR REPLACE FUNCTION bench_seed.payment_event(
    header bytea, event_id uuid, event_type text, occurred_at timestamptz, aggregate_id uuid, provider text,
    payment_id text, installment_id uuid, contract_id uuid, amount numeric, currency text, reason text
) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN header
        || bench_seed.avro_string(event_id::text)
        || bench_seed.avro_string(event_type)
        || bench_seed.avro_long(floor(extract(epoch FROM occurred_at) * 1000)::bigint)
        || bench_seed.avro_string(aggregate_id::text)
        || bench_seed.avro_string(provider)
        || bench_seed.avro_string(payment_id)
        || bench_seed.avro_opt_string(installment_id::text)
        || bench_seed.avro_opt_string(contract_id::text)
        || bench_seed.avro_amount(amount)
        || bench_seed.avro_string(currency)
        || bench_seed.avro_opt_string(reason)
        -- allocation and business_date (schema v2), null: the seed design knows no charges.
        || '\x0000'::bytea;
END
$$;

-- One payment, as the processor applies one (processor/src/rules.rs `pay`): applied up to what
-- the installment still owes, the rest kept as customer credit; rejected (booked to
-- unapplied_cash, a PaymentRejected event) for an unknown installment, another currency or a
-- contract that takes no payments. Returns 'applied', 'rejected' or 'duplicate' (nothing
-- written). The caller runs it in a transaction of its own.
CREATE OR REPLACE FUNCTION bench_seed.apply_payment(
    p_provider text, p_payment_id text, p_installment uuid, p_rail text, p_amount numeric, p_currency text,
    p_occurred_at timestamptz, p_topic text, p_header bytea
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_inst record;
    v_rejection text;
    v_journal uuid := bench_seed.uuid7();
    v_applied numeric := 0;
    v_credited numeric := 0;
    v_paid numeric;
    v_status text;
    v_was_paid boolean;
    v_principal numeric;
    v_event uuid;
BEGIN
    -- Dedupe on the provider's id; the unique key of the insert below is the backstop.
    PERFORM 1 FROM paystream.payment WHERE provider = p_provider AND provider_payment_id = p_payment_id;
    IF FOUND THEN
        RETURN 'duplicate';
    END IF;

    SELECT i.contract_id, c.customer_id, c.status AS contract_status, trim(i.currency) AS currency,
           i.amount_due, i.amount_paid, i.status
    INTO v_inst
    FROM paystream.installment i
    JOIN paystream.contract c ON c.id = i.contract_id
    WHERE i.id = p_installment
    FOR UPDATE OF i;
    IF NOT FOUND THEN
        v_rejection := 'unknown installment';
    ELSIF v_inst.currency <> p_currency THEN
        v_rejection := 'currency does not match the installment';
    ELSIF v_inst.contract_status NOT IN ('active', 'settled') THEN
        v_rejection := 'contract is not active';
    ELSE
        v_was_paid := v_inst.status = 'paid';
        v_applied := least(p_amount, greatest(v_inst.amount_due - v_inst.amount_paid, 0));
        v_credited := p_amount - v_applied;
        v_paid := v_inst.amount_paid + v_applied;
        v_status := CASE WHEN v_paid >= v_inst.amount_due THEN 'paid'
                         WHEN v_inst.status = 'overdue' THEN 'overdue'
                         WHEN v_paid > 0 THEN 'partially_paid'
                         ELSE 'open' END;
    END IF;

    INSERT INTO paystream.payment (provider, provider_payment_id, installment_id, rail, amount, currency, status,
                                   reason, amount_applied, amount_credited, journal_id, occurred_at,
                                   source_partition, source_offset)
    VALUES (p_provider, p_payment_id, p_installment, p_rail, p_amount, p_currency,
            CASE WHEN v_rejection IS NULL THEN 'applied' ELSE 'rejected' END, v_rejection, v_applied, v_credited,
            v_journal, p_occurred_at, 0, 0)
    ON CONFLICT (provider, provider_payment_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate'; -- a concurrent delivery of the same payment won
    END IF;

    INSERT INTO bench_seed.journal (id, kind, reference)
    VALUES (v_journal, 'payment', p_provider || '/' || p_payment_id);

    IF v_rejection IS NOT NULL THEN
        -- Collected money that cannot be applied is kept in suspense, never off the books.
        INSERT INTO bench_seed.posting (journal_id, line, account, currency, amount)
        VALUES (v_journal, 0, 'provider_clearing:' || p_provider, p_currency, p_amount),
               (v_journal, 1, 'unapplied_cash:' || p_provider, p_currency, -p_amount);
        v_event := gen_random_uuid();
        INSERT INTO bench_seed.outbox (topic, key, event_id, event_type, payload)
        VALUES (p_topic, p_installment::text, v_event, 'PaymentRejected',
                bench_seed.payment_event(p_header, v_event, 'PaymentRejected', now(), p_installment, p_provider,
                                         p_payment_id, nullif(p_installment, '00000000-0000-0000-0000-000000000000'),
                                         v_inst.contract_id, p_amount, p_currency, v_rejection));
        RETURN 'rejected';
    END IF;

    -- Lines numbered from 0 over the postings made (a zero amount is not posted).
    INSERT INTO bench_seed.posting (journal_id, line, account, currency, amount)
    SELECT v_journal, (row_number() OVER (ORDER BY l.n) - 1)::smallint, l.account, p_currency, l.amount
    FROM (VALUES (1, 'provider_clearing:' || p_provider, p_amount),
                 (2, 'receivable:' || v_inst.contract_id, -v_applied),
                 (3, 'customer_credit:' || v_inst.customer_id, -v_credited)) AS l (n, account, amount)
    WHERE l.amount <> 0;

    UPDATE paystream.installment i
    SET amount_paid = v_paid,
        status = v_status,
        version = i.version + 1,
        paid_at = CASE WHEN v_status = 'paid' THEN coalesce(i.paid_at, now()) END
    WHERE i.id = p_installment;

    v_event := gen_random_uuid();
    INSERT INTO bench_seed.outbox (topic, key, event_id, event_type, payload)
    VALUES (p_topic, p_installment::text, v_event, 'PaymentApplied',
            bench_seed.payment_event(p_header, v_event, 'PaymentApplied', now(), p_installment, p_provider,
                                     p_payment_id, p_installment, v_inst.contract_id, p_amount, p_currency, NULL));

    IF v_was_paid THEN
        v_event := gen_random_uuid();
        INSERT INTO bench_seed.outbox (topic, key, event_id, event_type, payload)
        VALUES (p_topic, p_installment::text, v_event, 'SuspectedDuplicatePayment',
                bench_seed.payment_event(p_header, v_event, 'SuspectedDuplicatePayment', now(), p_installment,
                                         p_provider, p_payment_id, p_installment, v_inst.contract_id, p_amount,
                                         p_currency, 'installment was already paid; amount kept as customer credit'));
    ELSIF v_status = 'paid' THEN
        v_event := gen_random_uuid();
        INSERT INTO bench_seed.outbox (topic, key, event_id, event_type, payload)
        VALUES (p_topic, p_installment::text, v_event, 'InstallmentPaid',
                bench_seed.payment_event(p_header, v_event, 'InstallmentPaid', now(), p_installment, p_provider,
                                         p_payment_id, p_installment, v_inst.contract_id, v_inst.amount_due,
                                         p_currency, NULL));
        -- The contract locked first, so that two payments of its last two installments see
        -- each other's (as the processor does).
        PERFORM 1 FROM paystream.contract WHERE id = v_inst.contract_id FOR UPDATE;
        UPDATE paystream.contract c
        SET status = 'settled', settled_at = now(), version = c.version + 1
        WHERE c.id = v_inst.contract_id
          AND c.status = 'active'
          AND NOT EXISTS (SELECT 1 FROM paystream.installment i WHERE i.contract_id = c.id AND i.status <> 'paid')
        RETURNING c.principal INTO v_principal;
        IF FOUND THEN
            v_event := gen_random_uuid();
            INSERT INTO bench_seed.outbox (topic, key, event_id, event_type, payload)
            VALUES (p_topic, v_inst.contract_id::text, v_event, 'ContractSettled',
                    bench_seed.payment_event(p_header, v_event, 'ContractSettled', now(), v_inst.contract_id, '', '',
                                             NULL, v_inst.contract_id, v_principal, p_currency, NULL));
        END IF;
    END IF;
    RETURN 'applied';
END
$$;
