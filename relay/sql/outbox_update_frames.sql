-- A row's frames without the event parked from it.
UPDATE paystream.outbox SET frames = $2, events = $3 WHERE id = $1
