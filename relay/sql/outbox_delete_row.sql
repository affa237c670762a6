-- A row whose only event was parked.
DELETE FROM paystream.outbox WHERE id = $1
