UPDATE paystream.contract c
SET status = 'settled', settled_at = now(), version = c.version + 1
WHERE c.id = ANY($1::uuid[])
  AND c.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM paystream.installment i WHERE i.contract_id = c.id AND i.status <> 'paid')
RETURNING c.id, c.currency, c.principal, c.version
