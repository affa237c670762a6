INSERT INTO paystream.posting (journal_id, line, account, currency, amount)
SELECT paystream.uuid_v7_from(k.created_at, md5('paystream-seed/journal/' || k.id)::uuid), l.line,
       CASE l.line WHEN 0 THEN 'receivable:' || k.id ELSE 'disbursement:' || k.currency END,
       k.currency,
       CASE l.line WHEN 0 THEN k.principal ELSE -k.principal END
FROM paystream.contract k, (VALUES (0::smallint), (1::smallint)) AS l(line)
WHERE k.id = ANY (SELECT md5('paystream-seed/contract/' || c || '/' || n)::uuid
                  FROM generate_series(1, $1::int) AS c, generate_series(1, $2::int) AS n)
ON CONFLICT (journal_id, line) DO NOTHING
