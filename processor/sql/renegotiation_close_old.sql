-- The replaced installments and their contract: renegotiated, their debt moved.
WITH old AS (
    UPDATE paystream.installment
    SET status = 'renegotiated', version = version + 1
    WHERE id = ANY($2::uuid[])
)
UPDATE paystream.contract SET status = 'renegotiated', version = version + 1 WHERE id = $1
