-- Whether each calendar's business date has been accrued. The daily job moves the business
-- date, then runs `paystream accrue`; when the second step does not run (a failed cron, a
-- crashed run nobody restarted), nothing else shows it: installments simply stop being
-- charged. The processor samples this view for PaystreamAccrualNotRun.
--
-- pending_seconds is how long the calendar's business date has gone without a finished
-- accrual run for it (0 once one finished). A catch-up run (`paystream accrue`) charges the
-- missed days at once, so the alert asks for a run, not a repair.
CREATE VIEW paystream.accrual_pending AS
SELECT b.calendar,
       b.business_date,
       b.updated_at AS business_date_set_at,
       a.last_accrued,
       CASE WHEN a.last_accrued >= b.business_date THEN 0::float8
            ELSE greatest(extract(epoch FROM now() - b.updated_at), 0)::float8
       END AS pending_seconds
FROM paystream.business_date b
CROSS JOIN LATERAL (SELECT max(r.business_date) AS last_accrued FROM paystream.accrual_run r
                    WHERE r.calendar = b.calendar AND r.finished_at IS NOT NULL) a;

COMMENT ON VIEW paystream.accrual_pending IS
    'Per calendar: its business date, the last accrued one, and how long the business date has gone unaccrued (0 once accrued).';

INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.accrual_pending'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.accrual_pending'),
    -- The processor samples it for the alert (PaystreamAccrualNotRun).
    ('paystream_processor', 'SELECT', 'TABLE', 'paystream.accrual_pending')
ON CONFLICT DO NOTHING;
