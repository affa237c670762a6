//! LGPD against the real servers: an anonymisation request waits for BACEN's five-year
//! retention on the business date, is then carried out so that no table and no event holds
//! the customer's personal data while the books stay exactly as they were, and a restored
//! backup re-applied with the request log ends with the same values.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use paystream_schemas::{decode, EventType, PaymentEvent};

use crate::harness::{cli, Pipeline};

const WAIT: Duration = Duration::from_secs(120);

fn run(p: &Pipeline, args: &[&str]) -> String {
    let (ok, out, err) = cli(&p.config, args);
    assert!(ok, "paystream {args:?} failed: {out}\n{err}");
    out
}

/// The personal columns of a customer (the birth date as text), read as the superuser, and
/// whether it is anonymised.
type Personal = (String, String, Option<String>, Option<String>, Option<String>, bool);

async fn personal(p: &Pipeline, id: Uuid) -> Personal {
    let row =
        p.db.query_one(
            "SELECT name, tax_id, email, phone, birth_date::text, anonymised_at IS NOT NULL
             FROM paystream.customer WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5))
}

/// The books as a fingerprint: the trial balance's rows, and every journal and posting.
async fn books(p: &Pipeline) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM paystream.trial_balance t",
        "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(j::text, '|' ORDER BY j.id)), '') FROM paystream.journal j",
        "SELECT count(*)::text || ' ' || coalesce(sum(amount), 0)::text || ' '
                || coalesce(md5(string_agg(x::text, '|' ORDER BY x.journal_id, x.line)), '')
         FROM paystream.posting x",
    ] {
        out.push(p.db.query_one(sql, &[]).await.unwrap().get(0));
    }
    out
}

/// Every (table.column, value) of schema paystream whose contents hold one of `values`: text
/// and everything castable to it by its text form, bytea by its bytes too (the outbox's Avro
/// frames).
async fn holding(p: &Pipeline, values: &[&str]) -> Vec<String> {
    let columns =
        p.db.query(
            "SELECT c.table_name::text, c.column_name::text, c.data_type::text
             FROM information_schema.columns c
             JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = 'paystream' AND t.table_type = 'BASE TABLE'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    assert!(columns.len() > 50, "the scan sees the schema: {} columns", columns.len());
    let mut found = Vec::new();
    for column in &columns {
        let (table, name, kind): (String, String, String) = (column.get(0), column.get(1), column.get(2));
        let test = if kind == "bytea" {
            format!("position(convert_to($1, 'UTF8') in \"{name}\") > 0")
        } else {
            format!("strpos(\"{name}\"::text, $1) > 0")
        };
        let sql = format!("SELECT count(*) FROM paystream.\"{table}\" WHERE {test}");
        for value in values {
            let n: i64 = p.db.query_one(&sql, &[value]).await.unwrap().get(0);
            if n > 0 {
                found.push(format!("{table}.{name} holds {value:?} in {n} row(s)"));
            }
        }
    }
    found
}

/// A request before the retention has passed is recorded and queued, not carried out: the
/// personal columns are unchanged and the request has no executed_at; the jobs role that
/// records it cannot read the salt. Once the business date reaches five years after the
/// close, the queued request is carried out: the name, CPF, email, phone and birth date are
/// in no column of any table nor in any event (the birth date is NULL), the trial balance,
/// journals and postings are exactly as before, and `CustomerAnonymised` is on the events
/// topic. A restore of the original row,
/// re-applied with the request log, ends with the very same values, and re-applying again
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lgpd_request_waits_for_retention_then_erases_everywhere_and_reapplies_after_restore() {
    let p = Pipeline::start().await;
    let customer: Uuid =
        p.db.query_one("SELECT id FROM paystream.customer WHERE name = 'Customer 3'", &[]).await.unwrap().get(0);
    p.db.execute(
        "UPDATE paystream.customer SET phone = '+55 11 98765-4321', birth_date = '1987-06-05' WHERE id = $1",
        &[&customer],
    )
    .await
    .unwrap();
    let original = personal(&p, customer).await;
    let (name, tax_id, email, phone, birth_date) = (
        original.0.clone(),
        original.1.clone(),
        original.2.clone().unwrap(),
        original.3.clone().unwrap(),
        original.4.clone().unwrap(),
    );
    let values = [name.as_str(), tax_id.as_str(), email.as_str(), phone.as_str(), birth_date.as_str()];

    // The customer's only contract closed on 2020-03-02 (its installments paid); the
    // retention runs until 2025-03-02.
    p.db.execute(
        "UPDATE paystream.contract SET status = 'settled', settled_at = '2020-03-02 15:00:00+00' WHERE customer_id = $1",
        &[&customer],
    )
    .await
    .unwrap();
    run(&p, &["business-date", "advance", "--to", "2025-02-28"]);

    // (a) Before the retention: queued, nothing changed.
    let out = run(&p, &["customers", "anonymise", &customer.to_string(), "--requested-by", "dpo-ticket-17"]);
    assert!(out.contains("queued") && out.contains("2025-03-02"), "{out}");
    assert_eq!(personal(&p, customer).await, original, "personal columns unchanged while queued");
    let row =
        p.db.query_one(
            "SELECT executed_at IS NULL, requested_by, length(salt) FROM paystream.anonymisation_request
             WHERE customer_id = $1",
            &[&customer],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "not executed");
    assert_eq!(row.get::<_, String>(1), "dpo-ticket-17");
    assert_eq!(row.get::<_, i32>(2), 16);
    let eligible: i64 =
        p.db.query_one("SELECT count(*) FROM paystream.anonymisation_eligible", &[]).await.unwrap().get(0);
    assert_eq!(eligible, 0);
    // Nothing pending is eligible yet.
    let out = run(&p, &["customers", "anonymise", "--pending"]);
    assert!(out.contains("0 queued request(s) carried out"), "{out}");
    assert_eq!(personal(&p, customer).await, original);

    // The scan finds what is there: before the request is carried out, exactly the
    // customer's five personal columns hold the values.
    let found = holding(&p, &values).await;
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(found.iter().all(|f| f.starts_with("customer.")), "{found:?}");

    let mut jobs = p.config.postgres.clone();
    jobs.login_user = Some("paystream_jobs".to_owned());
    let jobs = paystream_common::postgres::connect(&jobs, "paystream-test", None).await.unwrap();
    let error = jobs.query("SELECT salt FROM paystream.anonymisation_request", &[]).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{error}");
    for column in ["name", "birth_date"] {
        let error = jobs.query(&format!("SELECT {column} FROM paystream.customer"), &[]).await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{error}");
    }

    // (b) The business date passes the retention: the queued request is carried out.
    run(&p, &["business-date", "advance", "--to", "2025-03-10"]);
    let eligible: Vec<Uuid> =
        p.db.query("SELECT customer_id FROM paystream.anonymisation_eligible", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(eligible, vec![customer], "only the settled customer is eligible");
    let before = books(&p).await;
    let out = run(&p, &["customers", "anonymise", "--pending"]);
    assert!(out.contains("1 queued request(s) carried out"), "{out}");
    assert_eq!(books(&p).await, before, "trial balance, journals and postings unchanged");

    let anonymised = personal(&p, customer).await;
    assert!(anonymised.5, "anonymised_at set");
    assert_eq!(anonymised.4, None, "the birth date is erased");
    let expected: String =
        p.db.query_one(
            "SELECT encode(public.digest(salt || convert_to($2, 'UTF8'), 'sha256'), 'hex')
             FROM paystream.anonymisation_request WHERE customer_id = $1 AND executed_at IS NOT NULL",
            &[&customer, &tax_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(anonymised.1, expected, "the CPF is the salted SHA-256 of the CPF");
    assert!(anonymised.0.len() == 64 && anonymised.2.as_deref().is_some_and(|e| e.len() == 64));
    let contracts: i64 =
        p.db.query_one("SELECT count(*) FROM paystream.contract WHERE customer_id = $1", &[&customer])
            .await
            .unwrap()
            .get(0);
    assert_eq!(contracts, 1, "the row and its contract survive");

    // A second request for the same customer changes nothing.
    let out = run(&p, &["customers", "anonymise", &customer.to_string()]);
    assert!(out.contains("anonymised before"), "{out}");
    assert_eq!(personal(&p, customer).await, anonymised);

    let records = p
        .read_topic(&p.config.kafka.events_topic, WAIT, |r| {
            r.iter().any(|r| r.headers.get("event_type").map(String::as_str) == Some("CustomerAnonymised"))
        })
        .await;
    let events: Vec<PaymentEvent> = records.iter().map(|r| decode::<PaymentEvent>(&r.payload).unwrap()).collect();
    let anonymised_events: Vec<&PaymentEvent> =
        events.iter().filter(|e| e.event_type == EventType::CustomerAnonymised).collect();
    assert_eq!(anonymised_events.len(), 1);
    assert_eq!(anonymised_events[0].aggregate_id, customer);
    assert_eq!(anonymised_events[0].business_date.as_deref(), Some("2025-03-10"));
    for record in &records {
        for value in values {
            let bytes = value.as_bytes();
            let in_payload = record.payload.windows(bytes.len()).any(|w| w == bytes);
            let in_key = record.key.as_deref().is_some_and(|k| k.contains(value));
            let in_headers = record.headers.values().any(|h| h.contains(value));
            assert!(!in_payload && !in_key && !in_headers, "an event holds {value:?}");
        }
    }
    // Once the relay has published, nothing is left in the outbox either; every table is clean.
    p.wait_count("SELECT count(*) FROM paystream.outbox", 0, WAIT).await;
    let found = holding(&p, &values).await;
    assert!(found.is_empty(), "personal data left: {found:?}");

    // (c) A backup from before the anonymisation is restored: the original row is back.
    p.db.execute(
        "UPDATE paystream.customer SET name = $2, tax_id = $3, email = $4, phone = $5, birth_date = $6::text::date,
                                       anonymised_at = NULL
         WHERE id = $1",
        &[&customer, &name, &tax_id, &email, &phone, &birth_date],
    )
    .await
    .unwrap();
    assert_eq!(personal(&p, customer).await, original);
    let out = run(&p, &["customers", "reapply-anonymisations"]);
    assert!(out.contains("1 request(s) re-applied"), "{out}");
    let reapplied = personal(&p, customer).await;
    assert_eq!(reapplied, anonymised, "the same values as the first application");
    let at: Vec<bool> =
        p.db.query(
            "SELECT c.anonymised_at = r.executed_at FROM paystream.customer c
             JOIN paystream.anonymisation_request r ON r.customer_id = c.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(at, vec![true], "anonymised_at as at the first application");
    let out = run(&p, &["customers", "reapply-anonymisations"]);
    assert!(out.contains("0 request(s) re-applied, 1 already in place"), "{out}");
    assert_eq!(personal(&p, customer).await, anonymised);
    let found = holding(&p, &values).await;
    assert!(found.is_empty(), "personal data left after the re-application: {found:?}");

    p.stop().await;
}

async fn eligible(db: &tokio_postgres::Client) -> Vec<Uuid> {
    db.query("SELECT customer_id FROM paystream.anonymisation_eligible ORDER BY customer_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `paystream.anonymisation_eligible` follows every contract of a customer: a renegotiated
/// contract closes when the contract that replaced it was created; a settled status without a
/// settled_at counts as open; a contract in a second currency waits for its own calendar's
/// business date (none yet: not eligible); the retention ends on the fifth anniversary of the
/// close, not a day earlier. The function refuses to carry out a request that is not due,
/// whoever calls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lgpd_eligibility_follows_every_contract_and_its_calendar() {
    paystream_common::telemetry::init_tracing();
    let config = paystream_common::testing::isolated_config().await;
    let mut db = crate::harness::connect_db(&config).await;
    let size =
        paystream_processor::seed::SeedSize { customers: 2, contracts_per_customer: 1, installments_per_contract: 2 };
    paystream_processor::seed::seed(&mut db, size, "BRL").await.unwrap();
    let ids: Vec<Uuid> = db
        .query("SELECT id FROM paystream.customer ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (a, b) = (ids[0], ids[1]);
    db.execute("INSERT INTO paystream.business_date (calendar, business_date) VALUES ('BRL', '2030-06-14')", &[])
        .await
        .unwrap();

    // a: its contract was renegotiated on 2025-06-15 into one settled on 2025-06-10 (settled
    // before the renegotiation's time: the later close, the renegotiation, counts).
    let old: Uuid =
        db.query_one("SELECT id FROM paystream.contract WHERE customer_id = $1", &[&a]).await.unwrap().get(0);
    let new = Uuid::new_v4();
    db.execute("UPDATE paystream.contract SET status = 'renegotiated' WHERE id = $1", &[&old]).await.unwrap();
    db.execute(
        "INSERT INTO paystream.contract (id, customer_id, currency, principal, status, created_at, settled_at,
                                         renegotiated_from)
         VALUES ($1, $2, 'BRL', 100, 'settled', '2025-06-15 12:00+00', '2025-06-10 12:00+00', $3)",
        &[&new, &a, &old],
    )
    .await
    .unwrap();
    // b: settled without a time (open), then with one, then a second contract in USD.
    db.execute("UPDATE paystream.contract SET status = 'settled', settled_at = NULL WHERE customer_id = $1", &[&b])
        .await
        .unwrap();
    assert!(eligible(&db).await.is_empty(), "a's retention runs to 2030-06-15; b is open");

    db.execute("UPDATE paystream.business_date SET business_date = '2030-06-15'", &[]).await.unwrap();
    assert_eq!(eligible(&db).await, vec![a], "a on the fifth anniversary of its renegotiation");

    db.execute("UPDATE paystream.contract SET settled_at = '2020-01-02 12:00+00' WHERE customer_id = $1", &[&b])
        .await
        .unwrap();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(eligible(&db).await, both);
    db.execute(
        "INSERT INTO paystream.contract (id, customer_id, currency, principal, status, settled_at)
         VALUES ($1, $2, 'USD', 100, 'settled', '2020-01-02 12:00+00')",
        &[&Uuid::new_v4(), &b],
    )
    .await
    .unwrap();
    assert_eq!(eligible(&db).await, vec![a], "b's USD contract has no business date");

    // The function itself refuses what is not due, whoever calls it: jobs records b's request,
    // and asking to carry it out leaves it queued.
    let mut jobs = config.postgres.clone();
    jobs.login_user = Some("paystream_jobs".to_owned());
    let jobs = paystream_common::postgres::connect(&jobs, "paystream-test", None).await.unwrap();
    jobs.execute("INSERT INTO paystream.anonymisation_request (customer_id) VALUES ($1)", &[&b]).await.unwrap();
    let outcome: String = jobs.query_one("SELECT paystream.anonymisation_execute($1)", &[&b]).await.unwrap().get(0);
    assert_eq!(outcome, "queued");
    let anonymised: bool = db
        .query_one("SELECT anonymised_at IS NOT NULL FROM paystream.customer WHERE id = $1", &[&b])
        .await
        .unwrap()
        .get(0);
    assert!(!anonymised);
    let error = jobs
        .execute("UPDATE paystream.anonymisation_request SET executed_at = now() WHERE customer_id = $1", &[&b])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "jobs cannot mark a request carried out");
}

/// Two signed Pix webhooks whose payer's name, CPF, email, phone, birth date and address ride
/// along (`pagador`, `devedor`, `infoPagador`): one without a txid, which ingest cannot
/// normalise and the processor keeps as a dead letter, one that is applied. The dead letter
/// keeps what an operator needs (the endToEndId, the amount, the field at fault, the original
/// body's SHA-256); no column of any table, no inbound record, no event and no dead-letter
/// event holds any of the payer's values, nor does the reason that ingest and the processor
/// log. (Before, the dead letter, its event and the inbound record kept the body whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pix_payers_personal_data_reaches_no_table_and_no_topic() {
    use sha2::Digest as _;
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[0];
    let payer = [
        "Joaquina Pagadora Exemplo",
        "98765432100",
        "joaquina.pagadora@example.com",
        "+55 11 98888-7777",
        "1985-03-14",
        "Rua das Palmeiras 123",
    ];
    let webhook = |end_to_end: &str, txid: Option<String>| {
        let mut entry = serde_json::json!({
            "endToEndId": end_to_end,
            "valor": "10.00",
            "horario": "2026-12-04T10:00:00Z",
            "pagador": {"nome": payer[0], "cpf": payer[1]},
            "infoPagador": format!("{} {}", payer[2], payer[3]),
            "devedor": {"nome": payer[0], "cpf": payer[1], "email": payer[2], "telefone": payer[3],
                        "dataNascimento": payer[4], "endereco": payer[5]},
        });
        if let Some(txid) = txid {
            entry["txid"] = txid.into();
        }
        serde_json::to_vec(&serde_json::json!({ "pix": [entry] })).unwrap()
    };
    let dead = webhook("E00000000202612041000payerdl01", None);
    let applied = webhook("E00000000202612041000payerok01", Some(installment.simple().to_string()));
    for body in [&dead, &applied] {
        let (status, text) = p.post_pix(body).await;
        assert_eq!(status, 202, "{text}");
        for value in payer {
            assert!(!text.contains(value), "the answer holds {value:?}: {text}");
        }
    }
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.dead_letters", 1, WAIT).await, 1);
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 1, WAIT).await, 1);

    let row = p.db.query_one("SELECT reason, payload FROM paystream.dead_letters", &[]).await.unwrap();
    let (reason, payload): (String, Vec<u8>) = (row.get(0), row.get(1));
    let kept = String::from_utf8(payload).unwrap();
    assert!(kept.contains("E00000000202612041000payerdl01") && kept.contains("10.00"), "{kept}");
    assert!(kept.contains("[redacted]"), "{kept}");
    assert!(reason.contains("pix[0].txid"), "{reason}");
    assert!(reason.contains(&hex::encode(sha2::Sha256::digest(&dead))), "the original's hash: {reason}");
    for value in payer {
        assert!(!reason.contains(value), "the reason holds {value:?}: {reason}");
    }

    let found = holding(&p, &payer).await;
    assert!(found.is_empty(), "personal data in the database: {found:?}");
    let inbound = p.read_topic(&p.config.kafka.inbound_topic, WAIT, |r| r.len() >= 2).await;
    let dead_letters = p.read_topic(&p.config.kafka.deadletter_topic, WAIT, |r| !r.is_empty()).await;
    let events = p.read_topic(&p.config.kafka.events_topic, WAIT, |r| !r.is_empty()).await;
    assert!(inbound.len() >= 2 && !dead_letters.is_empty() && !events.is_empty());
    for (topic, records) in [("inbound", &inbound), ("dead-letter", &dead_letters), ("events", &events)] {
        for record in records.iter() {
            for value in payer {
                let bytes = value.as_bytes();
                assert!(
                    !record.payload.windows(bytes.len()).any(|w| w == bytes),
                    "a record of the {topic} topic holds {value:?}"
                );
            }
        }
    }
    p.stop().await;
}
