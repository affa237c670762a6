-- A run's outbox rows that no relay drained (the processor runs have none running).
DELETE FROM paystream.outbox WHERE topic = $1
