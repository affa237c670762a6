-- The money holes a balanced ledger still had, closed.
--
-- * Reversals that arrive before their payment (a chargeback travels keyed by the payment id,
--   on another partition; a refund may overtake its payment) are held in pending_reversal
--   until the payment is recorded, then applied, instead of being rejected for good.
-- * Stripe's charge.refunded says how much of a charge is refunded in all: kind refund_total
--   books the difference to payment.amount_refunded, so each partial refund is booked once.
-- * Reinstatements (refund_failed, chargeback_won) bring reversed money back.
-- * Rejected payments are booked to unapplied_cash:{provider} (suspense), so collected money
--   is never off the books; payment.journal_id is set for them too.
-- * A reversal no-op (a refund total already covered) is recorded as 'unchanged'.

ALTER TABLE paystream.payment ADD COLUMN amount_refunded numeric(20, 2) NOT NULL DEFAULT 0
    CHECK (amount_refunded >= 0);

ALTER TABLE paystream.reversal DROP CONSTRAINT reversal_kind_check;
ALTER TABLE paystream.reversal ADD CONSTRAINT reversal_kind_check
    CHECK (kind IN ('refund', 'refund_total', 'chargeback', 'refund_failed', 'chargeback_won'));
ALTER TABLE paystream.reversal DROP CONSTRAINT reversal_status_check;
ALTER TABLE paystream.reversal ADD CONSTRAINT reversal_status_check
    CHECK (status IN ('applied', 'rejected', 'unchanged'));
ALTER TABLE paystream.reversal ADD COLUMN applied_amount numeric(20, 2) NOT NULL DEFAULT 0;
COMMENT ON COLUMN paystream.reversal.amount IS 'As the provider said it (for refund_total: the cumulative total).';
COMMENT ON COLUMN paystream.reversal.applied_amount IS 'What was booked.';

-- A reversal whose payment is not recorded yet. Keyed like a reversal (provider and the
-- reversal's own id), so a redelivery is a no-op here too; the command is kept as it was
-- read, and applied by the processor in the transaction after its payment is recorded (or,
-- should a crash fall in between, by its periodic sweep).
CREATE TABLE paystream.pending_reversal (
    provider            text NOT NULL,
    reversal_id         text NOT NULL,
    provider_payment_id text NOT NULL,
    kind                text NOT NULL,
    amount              numeric(20, 2) NOT NULL,
    currency            char(3) NOT NULL,
    command             bytea NOT NULL,
    source_partition    integer NOT NULL,
    source_offset       bigint NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, reversal_id)
);
CREATE INDEX pending_reversal_payment_idx ON paystream.pending_reversal (provider, provider_payment_id);

-- What waits, oldest first: a row here for long means a payment that never arrived (or was
-- sent to another provider name); the operator asks the provider.
CREATE VIEW paystream.pending_reversals AS
SELECT r.provider, r.reversal_id, r.provider_payment_id, r.kind, r.amount, r.currency, r.received_at,
       extract(epoch FROM now() - r.received_at)::double precision AS age_seconds
FROM paystream.pending_reversal r
ORDER BY r.received_at;
