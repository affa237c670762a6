-- LGPD: a customer's right to erasure, held back by BACEN's five-year retention. A request
-- is recorded at once and carried out only when every contract of the customer has been
-- closed for five years on the business date of its currency's calendar; carrying it out
-- replaces the personal columns of `customer` (name, tax_id, email, phone) by the hex of a
-- salted SHA-256, so the row, its contracts, its ledger and its audit history all survive
-- and still join, while the person is no longer named. The salt is random per request and
-- kept in the request row: re-applying the log after a restore of an older backup yields
-- the very same values.
--
-- Service roles never read the personal columns: the replacement is done by a SECURITY
-- DEFINER function owned by paystream_owner, which paystream_jobs may only call.

CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public;

CREATE TABLE paystream.anonymisation_request (
    customer_id  uuid PRIMARY KEY REFERENCES paystream.customer (id),
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text NOT NULL DEFAULT session_user,
    -- When it was carried out; NULL while it waits for the retention to pass.
    executed_at  timestamptz,
    -- 16 random bytes, drawn when the request is recorded; never shown to a service role.
    salt         bytea NOT NULL DEFAULT public.gen_random_bytes(16) CHECK (length(salt) = 16)
);
COMMENT ON TABLE paystream.anonymisation_request IS
    'LGPD erasure requests: recorded by paystream customers anonymise, carried out after BACEN retention, '
    're-applied after a restore by paystream customers reapply-anonymisations.';
CREATE INDEX anonymisation_request_pending_idx ON paystream.anonymisation_request (requested_at)
    WHERE executed_at IS NULL;

-- Each customer's retention: when each contract closed and whether five years have passed on
-- its currency's business date. A contract is closed when its status is settled or closed
-- (at settled_at) or renegotiated (at settled_at if set, else when the contract that
-- replaced it was created, the moment its status changed); a closed status without a time
-- counts as open. A close is taken as its UTC date, which is never earlier than its
-- Brazilian date, so the retention is never cut short. `date + interval '5 years'` takes a
-- 29 February to the 28th (the CLI's rule does the same). A customer without contracts has
-- no clock to count retention on and is never eligible here; nor is one whose calendar has
-- no business date yet.
CREATE VIEW paystream.anonymisation_retention AS
SELECT cu.id AS customer_id,
       count(k.id) AS contracts,
       count(k.id) FILTER (WHERE k.closed_on IS NULL) AS open_contracts,
       max(k.closed_on) AS last_closed_on,
       (max(k.closed_on) + interval '5 years')::date AS retention_ends,
       min(b.business_date) AS business_date,
       count(k.id) FILTER (WHERE b.business_date IS NULL) AS without_business_date,
       min(k.currency) AS currency,
       count(k.id) > 0
           AND bool_and(k.closed_on IS NOT NULL AND b.business_date IS NOT NULL
                        AND (k.closed_on + interval '5 years')::date <= b.business_date) AS eligible
FROM paystream.customer cu
LEFT JOIN LATERAL (
    SELECT c.id, c.currency::text AS currency,
           (CASE WHEN c.status IN ('settled', 'closed') THEN c.settled_at
                 WHEN c.status = 'renegotiated' THEN
                     coalesce(c.settled_at,
                              (SELECT min(n.created_at) FROM paystream.contract n WHERE n.renegotiated_from = c.id))
            END AT TIME ZONE 'UTC')::date AS closed_on
    FROM paystream.contract c
    WHERE c.customer_id = cu.id
) k ON true
LEFT JOIN paystream.business_date b ON b.calendar = k.currency
GROUP BY cu.id;

-- Who may be anonymised now.
CREATE VIEW paystream.anonymisation_eligible AS
SELECT customer_id, last_closed_on, retention_ends, business_date
FROM paystream.anonymisation_retention
WHERE eligible;

-- Carries out one request, or re-applies it. Returns:
--   'executed'   the request was due and is now carried out (executed_at set now);
--   'queued'     not carried out: the retention has not passed (nothing changed);
--   'reapplied'  the request was carried out before and the row held personal data again
--                (a restored backup): replaced with the stored salt, anonymised_at as before;
--   'unchanged'  carried out before and the row is anonymised already.
-- Idempotent: a row whose anonymised_at is set is never hashed again (hashing a hash would
-- give other values than the first application did).
CREATE FUNCTION paystream.anonymisation_execute(p_customer uuid) RETURNS text
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

-- jobs: record requests (never read the salt), see who is eligible, carry requests out
-- through the function only. No privilege on customer's personal columns.
INSERT INTO paystream.role_privilege (grantee, privilege, object_type, object) VALUES
    ('paystream_jobs', 'SELECT (customer_id, requested_at, requested_by, executed_at)', 'TABLE',
     'paystream.anonymisation_request'),
    ('paystream_jobs', 'INSERT (customer_id, requested_by)', 'TABLE', 'paystream.anonymisation_request'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.anonymisation_retention'),
    ('paystream_jobs', 'SELECT', 'TABLE', 'paystream.anonymisation_eligible'),
    ('paystream_jobs', 'EXECUTE', 'FUNCTION', 'paystream.anonymisation_execute(uuid)'),
    ('paystream_reader', 'SELECT', 'TABLE', 'paystream.anonymisation_eligible')
ON CONFLICT DO NOTHING;
