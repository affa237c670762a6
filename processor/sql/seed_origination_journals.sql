-- Disbursement of each seeded contract: the receivable the payments then pay down. The
-- journal's id is a version-7 UUID at the contract's creation (the ledger's partition key),
-- the same on every run.
INSERT INTO paystream.journal (id, kind, reference)
SELECT paystream.uuid_v7_from(k.created_at, md5('paystream-seed/journal/' || k.id)::uuid), 'origination', 'contract/' || k.id
FROM paystream.contract k
WHERE k.id = ANY (SELECT md5('paystream-seed/contract/' || c || '/' || n)::uuid
                  FROM generate_series(1, $1::int) AS c, generate_series(1, $2::int) AS n)
ON CONFLICT (id) DO NOTHING
