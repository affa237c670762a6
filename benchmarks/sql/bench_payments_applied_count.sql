-- Payments of provider $1 under the payment-id prefix $2 that were applied (not rejected).
SELECT count(*) FROM paystream.payment
WHERE provider = $1 AND provider_payment_id LIKE $2 || '%' AND status = 'applied'
