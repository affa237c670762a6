SELECT contracts, open_contracts, last_closed_on, business_date, without_business_date, currency
FROM paystream.anonymisation_retention
WHERE customer_id = $1
