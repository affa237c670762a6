-- Whether any contract is booked under calendar (currency) $1.
SELECT EXISTS (SELECT 1 FROM paystream.contract WHERE currency = $1)
