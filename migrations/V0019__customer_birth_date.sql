-- A customer's birth date: personal data, like the name, CPF, email and phone, so it lives in
-- `customer` only and follows their rules.
--   * Read: only paystream_pii, which holds SELECT on the whole table; paystream_jobs reads
--     customer's id, created_at and anonymised_at only (migration 13's column grant), and no
--     other role reads customer at all. Nothing to grant.
--   * Audit: not whitelisted (paystream.audited_table); generating the customer's trigger
--     function again makes an UPDATE that changes it name it in `redacted`, never its value.
--   * LGPD: carrying out an anonymisation sets it to NULL. The other personal columns become
--     the salted SHA-256 of their value, which keeps them NOT NULL and distinct, but a date
--     cannot hold a digest, and a date derived from one would read as a real birth date (and
--     with some 40,000 plausible days it hides nothing a digest would). Nothing joins or
--     deduplicates on a birth date, and re-applying after a restore gives NULL again, so the
--     request log still ends with the same row.
ALTER TABLE paystream.customer ADD COLUMN birth_date date;
COMMENT ON COLUMN paystream.customer.birth_date IS
    'Personal data (LGPD): readable by paystream_pii only, audited as redacted, NULL once anonymised.';

CALL paystream.audit_generate('customer');

-- Migration 15's function with the birth date erased beside the hashed columns; otherwise
-- unchanged.
CREATE OR REPLACE FUNCTION paystream.anonymisation_execute(p_customer uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r paystream.anonymisation_request;
    outcome text;
    changed integer;
BEGIN
    SELECT * INTO r FROM paystream.anonymisation_request WHERE customer_id = p_customer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no anonymisation request for customer %', p_customer USING ERRCODE = 'no_data_found';
    END IF;
    IF r.executed_at IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM paystream.anonymisation_eligible e WHERE e.customer_id = p_customer) THEN
            RETURN 'queued';
        END IF;
        r.executed_at := now();
        UPDATE paystream.anonymisation_request SET executed_at = r.executed_at WHERE customer_id = p_customer;
        outcome := 'executed';
    ELSE
        outcome := 'reapplied';
    END IF;
    UPDATE paystream.customer c
       SET name = encode(public.digest(r.salt || convert_to(c.name, 'UTF8'), 'sha256'), 'hex'),
           tax_id = encode(public.digest(r.salt || convert_to(c.tax_id, 'UTF8'), 'sha256'), 'hex'),
           email = encode(public.digest(r.salt || convert_to(c.email, 'UTF8'), 'sha256'), 'hex'),
           phone = encode(public.digest(r.salt || convert_to(c.phone, 'UTF8'), 'sha256'), 'hex'),
           birth_date = NULL,
           anonymised_at = r.executed_at
     WHERE c.id = p_customer AND c.anonymised_at IS NULL;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF outcome = 'reapplied' AND changed = 0 THEN
        RETURN 'unchanged';
    END IF;
    RETURN outcome;
END
$$;
REVOKE ALL ON FUNCTION paystream.anonymisation_execute(uuid) FROM PUBLIC;
