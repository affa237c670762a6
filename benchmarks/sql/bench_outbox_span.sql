-- The first and last outbox row of topic $1 (0 and -1 when it has none).
SELECT coalesce(min(id), 0), coalesce(max(id), -1) FROM paystream.outbox WHERE topic = $1
