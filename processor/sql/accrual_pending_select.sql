-- How long each calendar's business date has gone without a finished accrual run.
SELECT calendar, pending_seconds FROM paystream.accrual_pending
