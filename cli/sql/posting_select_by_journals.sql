SELECT p.journal_id, p.line, p.account, p.currency::text, p.amount::text
FROM paystream.posting p
WHERE p.journal_id = ANY ($1)
ORDER BY p.journal_id, p.line
