-- Disbursement of each seeded contract: the receivable the payments then pay down.
INSERT INTO paystream.journal (id, kind, reference)
SELECT md5('paystream-seed/journal/' || k.id)::uuid, 'origination', 'contract/' || k.id
FROM paystream.contract k
WHERE k.id = ANY (SELECT md5('paystream-seed/contract/' || c || '/' || n)::uuid
                  FROM generate_series(1, $1::int) AS c, generate_series(1, $2::int) AS n)
ON CONFLICT (id) DO NOTHING
