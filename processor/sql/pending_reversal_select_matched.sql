-- Payments that held reversals wait for and that are recorded now: what the periodic sweep
-- applies (after a crash between a commit and its follow-up), at most $1 of them.
SELECT DISTINCT h.provider, h.provider_payment_id
FROM paystream.pending_reversal h
JOIN paystream.payment p ON p.provider = h.provider AND p.provider_payment_id = h.provider_payment_id
LIMIT $1
