-- The calendar's business date, locked: two advances of one calendar run one after the other.
SELECT business_date FROM paystream.business_date WHERE calendar = $1 FOR UPDATE
