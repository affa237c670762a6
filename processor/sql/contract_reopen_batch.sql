-- Settled contracts that a reversal made owe again: active again (their installments are
-- locked by the transaction; the contract row is locked by this update).
UPDATE paystream.contract c
SET status = 'active', settled_at = NULL, version = c.version + 1
WHERE c.id = ANY($1::uuid[]) AND c.status = 'settled'
