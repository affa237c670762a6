-- The oldest outbox row left of the span $1..=$2: the drain is done when there is none.
SELECT min(id) FROM paystream.outbox WHERE id BETWEEN $1 AND $2
