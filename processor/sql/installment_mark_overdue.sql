-- Up to $4 unpaid installments of calendar $1 due on or before $2 become overdue on business
-- date $3. Locked in id order, the processor's lock order, so that a batch of payments and
-- this never deadlock; a row the processor holds is waited for and re-checked after its
-- commit (an installment paid meanwhile is no longer selected).
WITH due AS (
    SELECT i.id
    FROM paystream.installment i
    WHERE i.currency = $1 AND i.status IN ('open', 'partially_paid') AND i.due_date <= $2
    ORDER BY i.id
    LIMIT $4
    FOR UPDATE
)
UPDATE paystream.installment i
SET status = 'overdue', overdue_since = coalesce(i.overdue_since, $3), version = i.version + 1
FROM due
WHERE i.id = due.id
RETURNING i.id, i.contract_id, i.amount_due - i.amount_paid, i.due_date
