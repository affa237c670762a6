SELECT pending, oldest_age_seconds FROM paystream.outbox_backlog
