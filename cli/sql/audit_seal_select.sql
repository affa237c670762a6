-- Every seal, oldest day first: the chain in the order it was built.
SELECT day::text, prev_hash, hash, rows FROM paystream.audit_seal ORDER BY day
