SELECT count(*), coalesce(max(extract(epoch FROM now() - received_at)), 0)::double precision
FROM paystream.pending_reversal
