-- What one day's seal covers, as text records in a fixed order: the audit rows by id, then
-- each journal (by id) followed by its postings (by line). The day runs from 00:00 to 24:00
-- UTC ($1, 'YYYY-MM-DD'), whatever the session's time zone. Times are microseconds since the
-- epoch and jsonb is in its canonical text form, so the text does not depend on the session.
-- An audit row's record is paystream.audit_seal_record's (migration 18): for rows written
-- before that migration, the very record this query built from them before.
SELECT x.record
FROM (
    SELECT 0 AS part, a.id AS audit_id, NULL::uuid AS journal_id, 0 AS line,
           paystream.audit_seal_record(a) AS record
    FROM paystream.audit_log a
    WHERE a.at >= ($1::text::date)::timestamp AT TIME ZONE 'UTC'
      AND a.at < ($1::text::date + 1)::timestamp AT TIME ZONE 'UTC'
    UNION ALL
    SELECT 1, NULL, j.id, -1,
           concat_ws('|', 'journal', j.id, j.kind, j.reference, (extract(epoch FROM j.created_at) * 1000000)::bigint)
    FROM paystream.journal j
    WHERE j.created_at >= ($1::text::date)::timestamp AT TIME ZONE 'UTC'
      AND j.created_at < ($1::text::date + 1)::timestamp AT TIME ZONE 'UTC'
    UNION ALL
    SELECT 1, NULL, j.id, p.line,
           concat_ws('|', 'posting', p.journal_id, p.line, p.account, p.currency, p.amount::text)
    FROM paystream.journal j
    JOIN paystream.posting p ON p.journal_id = j.id
    WHERE j.created_at >= ($1::text::date)::timestamp AT TIME ZONE 'UTC'
      AND j.created_at < ($1::text::date + 1)::timestamp AT TIME ZONE 'UTC'
) x
ORDER BY x.part, x.audit_id, x.journal_id, x.line
