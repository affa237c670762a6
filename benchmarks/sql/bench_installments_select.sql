-- The ids of the $1 bench installments of namespace $2, in order.
SELECT md5($2 || '/i/' || c)::uuid FROM generate_series(1, $1::int) c
