-- Rows are inserted in event order; the bigserial id then orders them per aggregate.
INSERT INTO paystream.outbox (lane, topic, key, event_id, event_type, payload)
SELECT u.lane, u.topic, u.key, u.event_id, u.event_type, u.payload
FROM unnest($1::smallint[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::bytea[])
     WITH ORDINALITY AS u(lane, topic, key, event_id, event_type, payload, n)
ORDER BY u.n
