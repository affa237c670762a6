-- Core schema: customers, contracts, installments, payments, the double-entry ledger,
-- the transactional outbox, dead letters and the processor's stored consumer positions.
-- Forward-only: later changes come as new files, never as edits here.

CREATE SCHEMA IF NOT EXISTS paystream;

-- The only table with personal data (LGPD). Everything else refers to a customer by UUID.
CREATE TABLE paystream.customer (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    tax_id      text NOT NULL,
    email       text,
    phone       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    anonymised_at timestamptz
);

CREATE TABLE paystream.contract (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES paystream.customer (id),
    currency    char(3) NOT NULL,
    principal   numeric(20, 2) NOT NULL CHECK (principal > 0),
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'settled', 'closed', 'renegotiated')),
    version     bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    settled_at  timestamptz
);
CREATE INDEX contract_customer_idx ON paystream.contract (customer_id);

CREATE TABLE paystream.installment (
    id          uuid PRIMARY KEY,
    contract_id uuid NOT NULL REFERENCES paystream.contract (id),
    seq         integer NOT NULL,
    due_date    date NOT NULL,
    currency    char(3) NOT NULL,
    amount_due  numeric(20, 2) NOT NULL CHECK (amount_due > 0),
    amount_paid numeric(20, 2) NOT NULL DEFAULT 0 CHECK (amount_paid >= 0),
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'partially_paid', 'paid', 'overdue', 'renegotiated')),
    version     bigint NOT NULL DEFAULT 0,
    paid_at     timestamptz,
    UNIQUE (contract_id, seq)
);

-- One row per payment the processor saw, applied or rejected. The unique key is the
-- provider's own id: it is what makes a redelivered webhook a no-op.
CREATE TABLE paystream.payment (
    provider            text NOT NULL,
    provider_payment_id text NOT NULL,
    installment_id      uuid NOT NULL,
    rail                text NOT NULL,
    amount              numeric(20, 2) NOT NULL,
    currency            char(3) NOT NULL,
    status              text NOT NULL CHECK (status IN ('applied', 'rejected', 'reversed')),
    reason              text,
    amount_applied      numeric(20, 2) NOT NULL DEFAULT 0,
    amount_credited     numeric(20, 2) NOT NULL DEFAULT 0,
    amount_reversed     numeric(20, 2) NOT NULL DEFAULT 0,
    journal_id          uuid,
    occurred_at         timestamptz NOT NULL,
    applied_at          timestamptz NOT NULL DEFAULT now(),
    source_partition    integer NOT NULL,
    source_offset       bigint NOT NULL,
    PRIMARY KEY (provider, provider_payment_id)
);
CREATE INDEX payment_installment_idx ON paystream.payment (installment_id);

-- Refunds and chargebacks, keyed by the provider's id of the reversal (its webhook id):
-- a redelivered reversal is a no-op. Rejected ones are kept too, for the same reason.
CREATE TABLE paystream.reversal (
    provider            text NOT NULL,
    reversal_id         text NOT NULL,
    provider_payment_id text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('refund', 'chargeback')),
    amount              numeric(20, 2) NOT NULL,
    status              text NOT NULL CHECK (status IN ('applied', 'rejected')),
    reason              text,
    journal_id          uuid,
    reversed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, reversal_id)
);

-- Double-entry ledger: append-only journals with postings. A posting's amount is signed:
-- positive debits, negative credits; every journal sums to zero per currency.
CREATE TABLE paystream.journal (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    reference   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE paystream.posting (
    journal_id  uuid NOT NULL REFERENCES paystream.journal (id),
    line        smallint NOT NULL,
    account     text NOT NULL,
    currency    char(3) NOT NULL,
    amount      numeric(20, 2) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (journal_id, line)
);
CREATE INDEX posting_account_idx ON paystream.posting (account, currency);

-- Transactional outbox. `payload` holds the exact Avro bytes that go on the wire, so the
-- relay is a pipe. `lane` spreads aggregates over relay lanes: one relay owns a lane at a
-- time, which keeps per-aggregate order with several relays.
CREATE TABLE paystream.outbox (
    id          bigserial PRIMARY KEY,
    lane        smallint NOT NULL,
    topic       text NOT NULL,
    key         text NOT NULL,
    event_id    uuid NOT NULL UNIQUE,
    event_type  text NOT NULL,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_lane_idx ON paystream.outbox (lane, id);

CREATE TABLE paystream.dead_letter (
    id               bigserial PRIMARY KEY,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    reason           text NOT NULL,
    payload          bytea,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_topic, source_partition, source_offset)
);

-- The processor's position per partition, written in the same transaction as the effect:
-- the next offset to apply. Kafka's committed offset may lag behind it, never lead it.
CREATE TABLE paystream.consumer_position (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- SQL contract views.
CREATE VIEW paystream.trial_balance AS
SELECT p.currency,
       coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)  AS debits,
       coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0) AS credits
FROM paystream.posting p
GROUP BY p.currency;

CREATE VIEW paystream.account_balances AS
SELECT p.account, p.currency, sum(p.amount) AS balance
FROM paystream.posting p
GROUP BY p.account, p.currency;

CREATE VIEW paystream.outbox_backlog AS
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(o.created_at)), 0)::double precision AS oldest_age_seconds
FROM paystream.outbox o;

CREATE VIEW paystream.dead_letters AS
SELECT d.id, d.reason, d.payload, d.source_topic, d.source_partition, d.source_offset, d.received_at
FROM paystream.dead_letter d;

CREATE VIEW paystream.installments AS
SELECT i.id, i.contract_id, c.customer_id, i.seq, i.due_date, i.status, i.amount_due, i.amount_paid,
       i.currency, i.version
FROM paystream.installment i
JOIN paystream.contract c ON c.id = i.contract_id;
