INSERT INTO paystream.business_date (calendar, business_date) VALUES ($1, $2)
ON CONFLICT (calendar) DO UPDATE SET business_date = excluded.business_date, updated_at = now()
