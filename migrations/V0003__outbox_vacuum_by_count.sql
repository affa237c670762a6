-- The outbox is a queue: every row is inserted once and deleted within moments, so the table
-- itself stays small while the rows it had leave dead entries behind. Each relay transaction
-- walks the primary key from the oldest entry and steps over every dead one left since the
-- last vacuum (measured: taking ~200 rows went from 2 to 10 ms in ten seconds at 15,000
-- events/s). The default trigger is a fraction of the live rows, about nothing here; vacuum
-- instead after a fixed count of dead rows, at full speed. The server's `autovacuum_naptime`
-- (default 1 min) still bounds how often a vacuum can start: see docs/architecture.md, "Relay lanes".
ALTER TABLE paystream.outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);
