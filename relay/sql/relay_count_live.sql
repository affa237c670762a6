-- Relays connected to this database now (each holds one session named paystream-relay):
-- the number the lanes are shared between.
SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'paystream-relay' AND datname = current_database()
