-- One row of a transaction's events of one lane and topic; the rows of a transaction are sent
-- in order, pipelined, so the bigserial id orders them (and so a lane's events) as written.
INSERT INTO paystream.outbox (lane, topic, events, keys, event_ids, event_types, payloads)
VALUES ($1, $2, $3, $4, $5, $6, $7)
