-- Disbursement of each seeded contract: the receivable the payments then pay down, debited
-- (line 0) against the disbursement account (line 1), one transfer. The journal's id is a
-- version-7 UUID at the contract's creation (the ledger's partition key), the same on every
-- run.
INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line,
                                credit_account, currency, amount)
SELECT paystream.uuid_v7_from(k.created_at, md5('paystream-seed/journal/' || k.id)::uuid), 0, 'origination',
       'contract/' || k.id, 0, 'receivable:' || k.id, 1, 'disbursement:' || k.currency, k.currency, k.principal
FROM paystream.contract k
WHERE k.id = ANY (SELECT md5('paystream-seed/contract/' || c || '/' || n)::uuid
                  FROM generate_series(1, $1::int) AS c, generate_series(1, $2::int) AS n)
ON CONFLICT (journal_id, seq) DO NOTHING
