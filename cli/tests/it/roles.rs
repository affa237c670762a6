//! Least privilege (migration V0013): each role of paystream is refused what it must not do,
//! by SQLSTATE 42501 (`insufficient_privilege`), and allowed what its part needs; only
//! `paystream_pii` reads customers' personal columns; a provider reader sees only its
//! provider's payments (row-level security). The rest of the suite runs the services on their
//! roles, which proves the grants are enough.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use paystream_common::Config;

/// The service and operator roles (not the owner, not the provider group).
const LOGIN_ROLES: [&str; 5] =
    ["paystream_processor", "paystream_relay", "paystream_jobs", "paystream_reader", "paystream_pii"];

/// A connection to the test's database logged in as `role`.
async fn connect_as(config: &Config, role: &str) -> Client {
    let mut pg = config.postgres.clone();
    pg.login_user = Some(role.to_owned());
    paystream_common::postgres::connect(&pg, "paystream-test", None).await.unwrap()
}

/// `sql` fails for lack of privilege (42501), not for another reason.
async fn refused(client: &Client, role: &str, sql: &str) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{role} was allowed: {sql}"),
        Err(error) => assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{role}: {sql}: {}",
            paystream_common::postgres::describe(&error)
        ),
    }
}

/// `sql` succeeds and returns how many rows it read.
async fn allowed(client: &Client, role: &str, sql: &str) -> usize {
    match client.query(sql, &[]).await {
        Ok(rows) => rows.len(),
        Err(error) => panic!("{role} was refused: {sql}: {}", paystream_common::postgres::describe(&error)),
    }
}

/// A seeded test database; its configuration and a superuser connection.
async fn seeded() -> (Config, Client) {
    paystream_common::telemetry::init_tracing();
    let config = paystream_common::testing::isolated_config().await;
    let mut db = crate::harness::connect_db(&config).await;
    let size =
        paystream_processor::seed::SeedSize { customers: 3, contracts_per_customer: 1, installments_per_contract: 2 };
    paystream_processor::seed::seed(&mut db, size, "BRL").await.unwrap();
    (config, db)
}

/// No service role can change the schema, switch the ledger's append-only triggers off (nor
/// bypass them with session_replication_role), rewrite or delete ledger rows, or read a
/// customer's name, CPF, email, phone or birth date; the relay cannot write payments, the reader reads
/// only the contract views, jobs reads customers' ids but nothing personal. Each refusal is
/// SQLSTATE 42501.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_must_not_do() {
    let (config, _db) = seeded().await;

    for role in LOGIN_ROLES {
        let c = connect_as(&config, role).await;
        refused(&c, role, "ALTER TABLE paystream.transfer DISABLE TRIGGER transfer_append_only").await;
        refused(&c, role, "ALTER TABLE paystream.transfer DISABLE TRIGGER USER").await;
        refused(&c, role, "DROP TRIGGER transfer_append_only_row ON paystream.transfer").await;
        refused(&c, role, "ALTER TABLE paystream.payment ADD COLUMN note text").await;
        refused(&c, role, "ALTER TABLE paystream.payment DISABLE ROW LEVEL SECURITY").await;
        refused(&c, role, "CREATE TABLE paystream.intruder (a int)").await;
        refused(&c, role, "SET session_replication_role = replica").await;
        refused(&c, role, "UPDATE paystream.transfer SET amount = amount").await;
        refused(&c, role, "DELETE FROM paystream.transfer").await;
        refused(&c, role, "TRUNCATE paystream.transfer").await;
        refused(
            &c,
            role,
            "INSERT INTO paystream.role_privilege (grantee, privilege, object) VALUES ('x', 'SELECT', 'y')",
        )
        .await;
        if role != "paystream_pii" {
            for column in ["name", "tax_id", "email", "phone", "birth_date"] {
                refused(&c, role, &format!("SELECT {column} FROM paystream.customer")).await;
            }
            refused(&c, role, "SELECT * FROM paystream.customer").await;
        }
    }

    let processor = connect_as(&config, "paystream_processor").await;
    refused(&processor, "processor", "UPDATE paystream.transfer SET kind = kind").await;
    refused(&processor, "processor", "UPDATE paystream.installment SET amount_due = amount_due").await;
    refused(&processor, "processor", "DELETE FROM paystream.payment").await;
    refused(&processor, "processor", "UPDATE paystream.dead_letter SET reason = reason").await;
    assert!(allowed(&processor, "processor", "SELECT id FROM paystream.installment FOR UPDATE").await > 0);

    let relay = connect_as(&config, "paystream_relay").await;
    refused(
        &relay,
        "relay",
        "INSERT INTO paystream.payment (provider, provider_payment_id, installment_id, rail, amount, currency,
             status, reason, occurred_at, source_partition, source_offset)
         SELECT 'demo-standard', 'forged', id, 'pix', 1, 'BRL', 'applied', NULL, now(), 0, 0 FROM paystream.installment",
    )
    .await;
    refused(&relay, "relay", "SELECT 1 FROM paystream.payment").await;
    refused(
        &relay,
        "relay",
        "INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line,
             credit_account, currency, amount) VALUES (gen_random_uuid(), 0, 'x', 'y', 0, 'a', 1, 'b', 'BRL', 1)",
    )
    .await;
    allowed(&relay, "relay", "SELECT pending FROM paystream.outbox_backlog").await;

    let reader = connect_as(&config, "paystream_reader").await;
    for table in
        ["payment", "installment", "contract", "transfer", "journal", "posting", "outbox", "dead_letter", "reversal"]
    {
        refused(&reader, "reader", &format!("SELECT 1 FROM paystream.{table}")).await;
    }
    for view in ["trial_balance", "account_balances", "outbox_backlog", "dead_letters", "installments"] {
        allowed(&reader, "reader", &format!("SELECT * FROM paystream.{view}")).await;
    }
    assert!(allowed(&reader, "reader", "SELECT * FROM paystream.installments").await > 0);

    let jobs = connect_as(&config, "paystream_jobs").await;
    assert_eq!(allowed(&jobs, "jobs", "SELECT id, created_at, anonymised_at FROM paystream.customer").await, 3);
    refused(&jobs, "jobs", "UPDATE paystream.customer SET anonymised_at = now()").await;
    refused(&jobs, "jobs", "INSERT INTO paystream.payment SELECT * FROM paystream.payment").await;

    let pii = connect_as(&config, "paystream_pii").await;
    assert_eq!(allowed(&pii, "pii", "SELECT name, tax_id, email, phone, birth_date FROM paystream.customer").await, 3);
    refused(&pii, "pii", "UPDATE paystream.customer SET email = NULL").await;
}

/// The roles themselves: none is a superuser, none bypasses row-level security, none owns an
/// object of the schema (so none can alter or disable anything), the owner cannot log in, and
/// each login role carries its own statement and idle-in-transaction timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_unprivileged_own_nothing_and_carry_timeouts() {
    let (_config, db) = seeded().await;
    let roles: Vec<String> = LOGIN_ROLES.iter().map(|r| (*r).to_owned()).collect();
    let powerful: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)
               AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb OR rolreplication OR NOT rolcanlogin)",
            &[&roles],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(powerful, 0, "login roles are plain login roles");
    let owner_logs_in: bool =
        db.query_one("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'paystream_owner'", &[]).await.unwrap().get(0);
    assert!(!owner_logs_in, "the owner is NOLOGIN");
    let not_owner: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'paystream'::regnamespace
               AND relowner <> 'paystream_owner'::regrole",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(not_owner, 0, "paystream_owner owns every relation of the schema");
    let functions_not_owned: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'paystream'::regnamespace
               AND proowner <> 'paystream_owner'::regrole",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(functions_not_owned, 0, "paystream_owner owns every function of the schema");
    for role in LOGIN_ROLES {
        let settings: Vec<String> = db
            .query_one(
                "SELECT coalesce(s.setconfig, '{}') FROM pg_roles r
                 LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
                 WHERE r.rolname = $1",
                &[&role],
            )
            .await
            .unwrap()
            .get(0);
        for key in ["statement_timeout=", "idle_in_transaction_session_timeout="] {
            assert!(settings.iter().any(|s| s.starts_with(key)), "{role} has {key}: {settings:?}");
        }
    }
}

/// A member of `paystream_provider_reader` mapped to one provider reads that provider's
/// payments and no other's, whatever it sets in its session; a member mapped to nothing
/// reads nothing; neither can widen its own mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reader_sees_only_its_providers_payments() {
    let (config, db) = seeded().await;
    db.batch_execute(
        "INSERT INTO paystream.payment (provider, provider_payment_id, installment_id, rail, amount, currency,
             status, reason, occurred_at, source_partition, source_offset)
         SELECT p.provider, p.provider || '-' || i.seq || '-' || i.id, i.id, 'pix', 1, 'BRL', 'rejected', 'test', now(), 0, 0
         FROM paystream.installment i, (VALUES ('demo-standard'), ('demo-stripe'), ('demo-pix')) AS p(provider)",
    )
    .await
    .unwrap();
    let per_provider: i64 = db
        .query_one("SELECT count(*) FROM paystream.payment WHERE provider = 'demo-stripe'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(per_provider > 0);

    // Roles are cluster-wide: name them for this test's database so that parallel runs do not
    // meet, and drop them at the end.
    let db_name: String = db.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let stripe_role = format!("{db_name}_stripe");
    let nobody_role = format!("{db_name}_nobody");
    for role in [&stripe_role, &nobody_role] {
        db.batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE paystream_provider_reader")).await.unwrap();
    }
    db.execute("INSERT INTO paystream.provider_reader_scope VALUES ($1, 'demo-stripe')", &[&stripe_role])
        .await
        .unwrap();

    let stripe = connect_as(&config, &stripe_role).await;
    let seen: Vec<(String, i64)> = stripe
        .query("SELECT provider, count(*) FROM paystream.payment GROUP BY provider", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(seen, vec![("demo-stripe".to_owned(), per_provider)], "only its provider's payments");
    let other: i64 = stripe
        .query_one("SELECT count(*) FROM paystream.payment WHERE provider = 'demo-standard'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 0, "another provider's payments are invisible, even asked for by name");
    refused(
        &stripe,
        "provider reader",
        "INSERT INTO paystream.provider_reader_scope VALUES (current_user, 'demo-pix')",
    )
    .await;
    refused(&stripe, "provider reader", "UPDATE paystream.payment SET reason = reason").await;
    refused(&stripe, "provider reader", "SELECT 1 FROM paystream.installment").await;

    let nobody = connect_as(&config, &nobody_role).await;
    let none: i64 = nobody.query_one("SELECT count(*) FROM paystream.payment", &[]).await.unwrap().get(0);
    assert_eq!(none, 0, "a provider reader mapped to no provider sees no payment");

    drop((stripe, nobody));
    db.execute("DELETE FROM paystream.provider_reader_scope WHERE role_name = $1", &[&stripe_role]).await.unwrap();
    for role in [&stripe_role, &nobody_role] {
        // Its sessions close asynchronously; a moment may pass before the role is free.
        for attempt in 0.. {
            match db.batch_execute(&format!("DROP ROLE {role}")).await {
                Ok(()) => break,
                Err(_) if attempt < 50 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(error) => panic!("drop {role}: {error}"),
            }
        }
    }
}
