-- The credit lifecycle: a business date per calendar, overdue installments, late fees and
-- interest charged once per business date, and payments that pay charges before principal.
--
-- * The business date is the clock of every rule here, never the wall clock: it moves only
--   when `paystream business-date advance` moves it, so a day can be replayed, caught up or
--   held (a holiday nobody entered yet) without the rules reading the time.
-- * installment.amount_paid stays the principal paid; charges and what was paid of them sit
--   beside it. An installment is paid when all three are.
-- * A charge is a row of paystream.charge unique on (installment, business date, kind): a
--   second accrual run for the same date, or a crashed run restarted, inserts nothing twice.
--   installment.accrued_through says up to which day interest is charged, so missed days are
--   caught up by the next run, in one charge.

CREATE TABLE paystream.business_date (
    calendar      text PRIMARY KEY,
    business_date date NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE paystream.business_date IS
    'The business date per calendar (a currency code: BRL). Moved by paystream business-date advance.';

-- Days that are not business days besides Saturdays and Sundays (national holidays).
CREATE TABLE paystream.holiday (
    calendar text NOT NULL,
    day      date NOT NULL,
    name     text NOT NULL,
    PRIMARY KEY (calendar, day)
);

-- The contract's terms; NULL means the configured default (credit.* in the configuration).
ALTER TABLE paystream.contract
    ADD COLUMN late_fee_rate numeric(9, 6) CHECK (late_fee_rate >= 0 AND late_fee_rate <= 1),
    ADD COLUMN monthly_interest_rate numeric(9, 6)
        CHECK (monthly_interest_rate >= 0 AND monthly_interest_rate <= 1),
    ADD COLUMN allocation_order text CHECK (allocation_order IN (
        'late_fee,interest,principal', 'interest,late_fee,principal', 'principal,interest,late_fee',
        'principal,late_fee,interest', 'late_fee,principal,interest', 'interest,principal,late_fee'));

-- A renegotiated contract's debt moves to a new contract that names it.
ALTER TABLE paystream.contract ADD COLUMN renegotiated_from uuid REFERENCES paystream.contract (id);
CREATE INDEX contract_renegotiated_from_idx ON paystream.contract (renegotiated_from)
    WHERE renegotiated_from IS NOT NULL;

ALTER TABLE paystream.installment
    ADD COLUMN late_fee       numeric(20, 2) NOT NULL DEFAULT 0 CHECK (late_fee >= 0),
    ADD COLUMN late_fee_paid  numeric(20, 2) NOT NULL DEFAULT 0 CHECK (late_fee_paid >= 0),
    ADD COLUMN interest       numeric(20, 2) NOT NULL DEFAULT 0 CHECK (interest >= 0),
    ADD COLUMN interest_paid  numeric(20, 2) NOT NULL DEFAULT 0 CHECK (interest_paid >= 0),
    ADD COLUMN overdue_since  date,
    ADD COLUMN accrued_through date;

-- How each payment was split, so that its reversal takes back exactly that split.
-- amount_applied stays the whole applied amount; principal is what is left of it.
ALTER TABLE paystream.payment
    ADD COLUMN applied_late_fee numeric(20, 2) NOT NULL DEFAULT 0 CHECK (applied_late_fee >= 0),
    ADD COLUMN applied_interest numeric(20, 2) NOT NULL DEFAULT 0 CHECK (applied_interest >= 0);

CREATE TABLE paystream.charge (
    installment_id uuid NOT NULL REFERENCES paystream.installment (id),
    business_date  date NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('late_fee', 'interest')),
    amount         numeric(20, 2) NOT NULL CHECK (amount > 0),
    -- The overdue principal it was computed on, and for interest the days it covers.
    base           numeric(20, 2) NOT NULL,
    days           integer NOT NULL CHECK (days >= 0),
    journal_id     uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (installment_id, business_date, kind)
) PARTITION BY RANGE (business_date);
-- Monthly partitions (migration 16 creates the months and keeps them ahead); DEFAULT takes
-- whatever no month holds, so a missing month never fails a charge.
CREATE TABLE paystream.charge_default PARTITION OF paystream.charge DEFAULT;
CREATE INDEX charge_business_date_idx ON paystream.charge (business_date);

-- One accrual run per calendar and business date: what it charged, and whether it finished.
CREATE TABLE paystream.accrual_run (
    calendar      text NOT NULL,
    business_date date NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    installments  bigint NOT NULL DEFAULT 0,
    late_fees     numeric(20, 2) NOT NULL DEFAULT 0,
    interest      numeric(20, 2) NOT NULL DEFAULT 0,
    conflicts     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (calendar, business_date)
);

-- The scans of the lifecycle: unpaid installments by due date (marking overdue), overdue ones
-- by id (accrual walks them in id order, the processor's lock order). Partial, so the
-- processor's updates of installments that are neither pay no index maintenance for them.
CREATE INDEX installment_unpaid_due_idx ON paystream.installment (currency, due_date)
    WHERE status IN ('open', 'partially_paid');
CREATE INDEX installment_overdue_idx ON paystream.installment (currency, id) WHERE status = 'overdue';

-- Delinquency: every overdue installment with its days past due on its calendar's business
-- date, its bucket and what it owes.
CREATE VIEW paystream.delinquency AS
SELECT i.id AS installment_id, i.contract_id, c.customer_id, i.currency, i.due_date, b.business_date,
       (b.business_date - i.due_date) AS days_past_due,
       CASE WHEN b.business_date - i.due_date <= 30 THEN '1-30'
            WHEN b.business_date - i.due_date <= 60 THEN '31-60'
            WHEN b.business_date - i.due_date <= 90 THEN '61-90'
            ELSE '90+' END AS bucket,
       i.amount_due - i.amount_paid AS principal_due,
       i.late_fee - i.late_fee_paid AS late_fee_due,
       i.interest - i.interest_paid AS interest_due,
       (i.amount_due - i.amount_paid) + (i.late_fee - i.late_fee_paid) + (i.interest - i.interest_paid) AS total_due
FROM paystream.installment i
JOIN paystream.contract c ON c.id = i.contract_id
JOIN paystream.business_date b ON b.calendar = i.currency
WHERE i.status = 'overdue';

-- The installments view keeps its columns and gains the charges.
CREATE OR REPLACE VIEW paystream.installments AS
SELECT i.id, i.contract_id, c.customer_id, i.seq, i.due_date, i.status, i.amount_due, i.amount_paid,
       i.currency, i.version, i.late_fee, i.late_fee_paid, i.interest, i.interest_paid
FROM paystream.installment i
JOIN paystream.contract c ON c.id = i.contract_id;
