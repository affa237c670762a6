-- Locks the chunk's installments in id order (the processor's order: no deadlock) and
-- returns their versions: a version that moved since they were read means a payment (or
-- another charge) came in between, and the charge is recomputed.
SELECT i.id, i.version
FROM paystream.installment i
WHERE i.id = ANY($1::uuid[])
ORDER BY i.id
FOR UPDATE
