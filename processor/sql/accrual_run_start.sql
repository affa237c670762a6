INSERT INTO paystream.accrual_run (calendar, business_date) VALUES ($1, $2)
ON CONFLICT (calendar, business_date) DO NOTHING
