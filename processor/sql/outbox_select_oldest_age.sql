SELECT coalesce(extract(epoch FROM now() - (SELECT o.created_at FROM paystream.outbox o ORDER BY o.id LIMIT 1)), 0)::double precision
