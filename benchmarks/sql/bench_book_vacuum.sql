-- After a run's fresh installments were written: vacuum and analyze the tables they went to,
-- so that autovacuum does not start on them during the measured run.
VACUUM (ANALYZE) paystream.customer, paystream.contract, paystream.installment
