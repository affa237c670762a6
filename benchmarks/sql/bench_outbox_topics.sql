-- The topics the outbox still holds events for, so that the broker has them before a relay
-- starts draining.
SELECT DISTINCT topic FROM paystream.outbox
