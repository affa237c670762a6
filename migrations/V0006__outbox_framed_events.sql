-- An outbox row's events as one framed `bytea` instead of four parallel arrays. Per event,
-- in order, lengths big-endian:
--
--     u32 key length, key (UTF-8) | 16 bytes event id | u32 type length, type (UTF-8)
--     | u32 payload length, payload (the Avro single-object bytes that go on the wire)
--
-- The database only stores and returns the bytes, which is all it ever did with the arrays:
-- returning the arrays meant sending each of their elements one by one (measured, 1,000,000
-- events: 216 ms as arrays, 80 ms as one value), and one out-of-line value a row instead of
-- four means one chunk list to read and delete instead of four. The relay reads the frames
-- in place and refuses a row whose frames do not add up to `events` (nothing of it is sent).
-- `paystream.outbox_events(frames)` unpacks a row in SQL, for operators.
--
-- Upgrade with processors and relays stopped; waiting rows are converted in place.
ALTER TABLE paystream.outbox ADD COLUMN frames bytea;

UPDATE paystream.outbox o
SET frames = (
    SELECT string_agg(
               int4send(octet_length(convert_to(u.key, 'UTF8'))) || convert_to(u.key, 'UTF8')
               || uuid_send(u.event_id)
               || int4send(octet_length(convert_to(u.event_type, 'UTF8'))) || convert_to(u.event_type, 'UTF8')
               || int4send(octet_length(u.payload)) || u.payload,
               ''::bytea ORDER BY u.i)
    FROM unnest(o.keys, o.event_ids, o.event_types, o.payloads) WITH ORDINALITY AS u (key, event_id, event_type, payload, i)
);

ALTER TABLE paystream.outbox
    DROP CONSTRAINT outbox_events_aligned,
    DROP COLUMN keys,
    DROP COLUMN event_ids,
    DROP COLUMN event_types,
    DROP COLUMN payloads,
    ALTER COLUMN frames SET NOT NULL,
    -- 28 bytes is the smallest frame (empty key, type and payload). The relay checks the
    -- frames themselves; this keeps the count and the size from contradicting each other.
    -- octet_length of an out-of-line value reads its pointer, not its chunks.
    ADD CONSTRAINT outbox_events_framed CHECK (
        events BETWEEN 1 AND 128 AND octet_length(frames) >= 28 * events
    ),
    -- Out of line and uncompressed, as the arrays were (Avro with random ids hardly
    -- compresses); no planner statistics (no plan reads it, and autoanalyze of a queue table
    -- would read every sampled row's chunks).
    ALTER COLUMN frames SET STORAGE EXTERNAL,
    ALTER COLUMN frames SET STATISTICS 0;

-- The events of one outbox row's frames, in order (for operators and tests; the relay parses
-- the frames itself).
CREATE FUNCTION paystream.outbox_events(frames bytea)
RETURNS TABLE (key text, event_id uuid, event_type text, payload bytea)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    at int := 0; -- offset of the next frame, from 0 as get_byte counts
    len int;
BEGIN
    WHILE at < octet_length(frames) LOOP
        len := (get_byte(frames, at) << 24) | (get_byte(frames, at + 1) << 16)
               | (get_byte(frames, at + 2) << 8) | get_byte(frames, at + 3);
        key := convert_from(substring(frames FROM at + 5 FOR len), 'UTF8');
        at := at + 4 + len;
        event_id := encode(substring(frames FROM at + 1 FOR 16), 'hex')::uuid;
        at := at + 16;
        len := (get_byte(frames, at) << 24) | (get_byte(frames, at + 1) << 16)
               | (get_byte(frames, at + 2) << 8) | get_byte(frames, at + 3);
        event_type := convert_from(substring(frames FROM at + 5 FOR len), 'UTF8');
        at := at + 4 + len;
        len := (get_byte(frames, at) << 24) | (get_byte(frames, at + 1) << 16)
               | (get_byte(frames, at + 2) << 8) | get_byte(frames, at + 3);
        payload := substring(frames FROM at + 5 FOR len);
        at := at + 4 + len;
        RETURN NEXT;
    END LOOP;
END
$$;
