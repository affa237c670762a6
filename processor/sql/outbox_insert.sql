-- One row of a transaction's events of one lane and topic, framed (paystream_common::outbox);
-- the rows of a transaction are sent in order, pipelined, so the bigserial id orders them (and
-- so a lane's events) as written.
INSERT INTO paystream.outbox (lane, topic, events, frames)
VALUES ($1, $2, $3, $4)
