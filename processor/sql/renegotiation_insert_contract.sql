INSERT INTO paystream.contract (id, customer_id, currency, principal, late_fee_rate, monthly_interest_rate,
                                allocation_order, renegotiated_from)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
