-- Adds the charges and moves accrued_through, for rows whose version is still the one the
-- charges were computed from (checked again here: the write is what the check guards).
UPDATE paystream.installment i
SET late_fee = i.late_fee + u.late_fee,
    interest = i.interest + u.interest,
    accrued_through = $5,
    version = i.version + 1
FROM unnest($1::uuid[], $2::bigint[], $3::numeric[], $4::numeric[]) AS u(id, version, late_fee, interest)
WHERE i.id = u.id AND i.version = u.version
