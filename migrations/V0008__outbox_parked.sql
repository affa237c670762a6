-- Events the broker refuses for good (a record larger than the topic accepts, a record it
-- calls invalid): moved out of their outbox row into outbox_parked by the relay, with the
-- broker's answer, so that the lane's later events go on instead of waiting behind one that
-- can never be published. An operator fixes the cause and re-publishes or drops the event;
-- the alert on paystream_relay_events_parked_total says one is there.
CREATE TABLE paystream.outbox_parked (
    id          bigserial PRIMARY KEY,
    outbox_id   bigint NOT NULL,
    lane        smallint NOT NULL,
    topic       text NOT NULL,
    key         text NOT NULL,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    payload     bytea NOT NULL,
    error       text NOT NULL,
    committed_at timestamptz NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW paystream.parked_events AS
SELECT p.id, p.topic, p.key, p.event_id, p.event_type, length(p.payload) AS bytes, p.error, p.committed_at, p.parked_at
FROM paystream.outbox_parked p
ORDER BY p.id;
