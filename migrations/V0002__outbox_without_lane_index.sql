-- The relay walks the outbox's primary key in id order and filters the lanes it owns (its
-- session disables sorts: the one plan that stops after a batch, whatever the statistics of
-- this queue table say). The (lane, id) index was never read; it cost every outbox insert a
-- second index entry and vacuum a second index to clean.
DROP INDEX IF EXISTS paystream.outbox_lane_idx;
