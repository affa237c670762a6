-- The last sealed day and its hash: the link a new seal chains to.
SELECT day::text, hash FROM paystream.audit_seal ORDER BY day DESC LIMIT 1
