INSERT INTO paystream.anonymisation_request (customer_id, requested_by)
VALUES ($1, coalesce($2::text, session_user))
ON CONFLICT (customer_id) DO NOTHING
