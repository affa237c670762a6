//! The audit trail (migration V0014) and its seals: payments through the whole pipeline leave
//! audit rows for their payments, installments and contracts, written in the processor's
//! name, holding no customer's personal data; `paystream audit seal` chains days and
//! `paystream audit verify` names the first day whose rows were altered. The changes are read
//! through `paystream.audit_trail` (migration 18 stores them as typed arrays and renders them
//! in migration 14's jsonb form).

use std::time::Duration;

use crate::harness::{cli, Pipeline};

const WAIT: Duration = Duration::from_secs(60);

async fn count(p: &Pipeline, sql: &str) -> i64 {
    p.db.query_one(sql, &[]).await.unwrap().get(0)
}

async fn seal_record(p: &Pipeline, id: i64) -> String {
    p.db.query_one("SELECT paystream.audit_seal_record(a) FROM paystream.audit_log a WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

/// Pays one installment in full and another in part: the audit log holds an INSERT for each
/// payment, an UPDATE for each installment with amount_paid's old and new values, all by
/// `paystream_processor` in a transaction id of their own; a change to a customer's email,
/// phone and birth date is recorded as redacted. No audit row holds any customer's name, CPF,
/// email, phone or birth date, old or new, and service roles cannot write the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_are_audited_without_personal_data() {
    let p = Pipeline::start().await;
    let installments = p.installments().await;
    let (full, due) = installments[0];
    let (part, _) = installments[1];
    for (webhook, payment, installment, amount) in
        [("msg_a1", "pay_a1", full, due.to_string()), ("msg_a2", "pay_a2", part, "10.00".to_owned())]
    {
        let (headers, body) = p.payment(webhook, payment, installment, &amount);
        assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    }
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 2, WAIT).await, 2);

    let payments = count(
        &p,
        "SELECT count(*) FROM paystream.audit_trail a, jsonb_array_elements(a.changes) e
         WHERE a.table_name = 'payment' AND a.action = 'INSERT' AND a.role = 'paystream_processor'
           AND e -> 'key' ? 'provider_payment_id' AND e -> 'new' ? 'amount' AND NOT e ? 'old'",
    )
    .await;
    assert_eq!(payments, 2, "one INSERT per payment, by the processor");
    let paid: Vec<(String, String, String)> =
        p.db.query(
            "SELECT e #>> '{key,id}', e #>> '{old,amount_paid}', e #>> '{new,amount_paid}'
             FROM paystream.audit_trail a, jsonb_array_elements(a.changes) e
             WHERE a.table_name = 'installment' AND a.action = 'UPDATE' AND a.role = 'paystream_processor'
             ORDER BY 3",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(paid.len(), 2, "{paid:?}");
    assert!(paid.contains(&(part.to_string(), "0.00".into(), "10.00".into())), "{paid:?}");
    assert!(paid.contains(&(full.to_string(), "0.00".into(), due.to_string())), "{paid:?}");
    let txids =
        count(&p, "SELECT count(DISTINCT txid) FROM paystream.audit_log WHERE role = 'paystream_processor'").await;
    assert!(txids >= 1);

    // Personal data changes (a phone added, an email changed) are on record as changed, never
    // with their values.
    p.db.batch_execute(
        "UPDATE paystream.customer SET birth_date = date '1961-01-01' + (abs(hashtext(id::text)) % 9000)",
    )
    .await
    .unwrap();
    let before: Vec<String> =
        p.db.query("SELECT unnest(array[name, tax_id, email, birth_date::text]) FROM paystream.customer", &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
    p.db.batch_execute(
        "UPDATE paystream.customer SET phone = '+55 11 9' || lpad((abs(hashtext(id::text)) % 100000000)::text, 8, '0'),
                                       email = 'new.' || email, birth_date = birth_date + 1",
    )
    .await
    .unwrap();
    let redacted = count(
        &p,
        "SELECT count(*) FROM paystream.audit_trail a, jsonb_array_elements(a.changes) e
         WHERE a.table_name = 'customer' AND a.action = 'UPDATE'
           AND e -> 'redacted' = '[\"email\", \"phone\", \"birth_date\"]' AND e -> 'new' = '{}' AND e -> 'old' = '{}'",
    )
    .await;
    assert_eq!(redacted, count(&p, "SELECT count(*) FROM paystream.customer").await, "one redacted row per customer");

    let mut personal: Vec<String> =
        p.db.query("SELECT unnest(array[name, tax_id, email, phone, birth_date::text]) FROM paystream.customer", &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
    personal.extend(before);
    assert!(personal.len() >= 24);
    // Both as stored (the typed arrays) and as rendered.
    let rows: Vec<String> = p
        .db
        .query("SELECT a::text FROM paystream.audit_log a UNION ALL SELECT t::text FROM paystream.audit_trail t", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let changed = count(&p, "SELECT sum(rows)::bigint FROM paystream.audit_log").await;
    assert!(changed >= 12, "the seed's customers, the payments, installments and customer changes: {changed}");
    for value in &personal {
        assert!(!rows.iter().any(|row| row.contains(value.as_str())), "personal data {value:?} in the audit log");
    }

    // Nobody but the trigger writes the log.
    for role in ["paystream_processor", "paystream_relay", "paystream_jobs"] {
        let mut pg = p.config.postgres.clone();
        pg.login_user = Some(role.into());
        let c = paystream_common::postgres::connect(&pg, "paystream-test", None).await.unwrap();
        for sql in [
            "DELETE FROM paystream.audit_log",
            "UPDATE paystream.audit_log SET role = 'x'",
            "INSERT INTO paystream.audit_log (table_name, action, rows, changes, role, txid, at)
                     VALUES ('payment', 'INSERT', 1, '[]', 'x', pg_current_xact_id(), now())",
        ] {
            let error = c.batch_execute(sql).await.expect_err(sql);
            assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{role}: {sql}");
        }
    }
    p.stop().await;
}

/// Seals yesterday (nothing in it) and today (the seed's journals, the payments' audit rows
/// and journals), in order: verify holds; sealing today again or a day before it is refused.
/// Then one audit row of today is altered as the superuser: verify fails and names today.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_names_the_day_whose_audit_rows_were_altered() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[0];
    let (headers, body) = p.payment("msg_s1", "pay_s1", installment, "5.00");
    assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    assert_eq!(p.wait_count("SELECT count(*) FROM paystream.payment", 1, WAIT).await, 1);

    let (today, yesterday): (String, String) = {
        let row =
            p.db.query_one(
                "SELECT (now() AT TIME ZONE 'UTC')::date::text, ((now() AT TIME ZONE 'UTC')::date - 1)::text",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    for day in [&yesterday, &today] {
        let (ok, out, err) = cli(&p.config, &["audit", "seal", "--date", day]);
        assert!(ok, "seal {day}: {out}{err}");
        assert!(out.contains(&format!("sealed {day}")), "{out}");
    }
    let rows: i64 =
        p.db.query_one("SELECT rows FROM paystream.audit_seal WHERE day = $1::text::date", &[&today])
            .await
            .unwrap()
            .get(0);
    assert!(rows > 3, "today's seal covers the seed's journals and the payment's rows: {rows}");
    let linked = count(
        &p,
        "SELECT count(*) FROM paystream.audit_seal t JOIN paystream.audit_seal y ON t.prev_hash = y.hash AND y.day = t.day - 1",
    )
    .await;
    assert_eq!(linked, 1, "today's seal chains to yesterday's");

    let (ok, out, err) = cli(&p.config, &["audit", "verify"]);
    assert!(ok, "an untouched chain verifies: {out}{err}");
    assert!(out.contains("verified 2 sealed days"), "{out}");
    for day in [&today, &yesterday] {
        let (ok, _, err) = cli(&p.config, &["audit", "seal", "--date", day]);
        assert!(!ok && err.contains("sealed already"), "sealing {day} again is refused: {err}");
    }

    p.db.batch_execute(
        "UPDATE paystream.audit_log SET payment_new[1].amount = 500.00
         WHERE id = (SELECT min(id) FROM paystream.audit_log WHERE table_name = 'payment')",
    )
    .await
    .unwrap();
    let (ok, out, _) = cli(&p.config, &["audit", "verify"]);
    assert!(!ok, "verify fails after a row was altered: {out}");
    assert!(out.contains(&format!("first altered day: {today}")), "{out}");
    p.stop().await;
}

/// A bulk statement (2,500 customers in one INSERT, then one UPDATE of them all) is audited in
/// rows of at most 1,000 changes, every changed row once: one row per statement failed once a
/// statement's changes passed jsonb's 256 MiB cap (a million-row seed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_statements_are_audited_in_bounded_rows() {
    let p = Pipeline::start().await;
    p.db.execute(
        "INSERT INTO paystream.customer (id, name, tax_id)
         SELECT md5('bulk-audit/' || g)::uuid, 'Bulk ' || g, lpad(g::text, 11, '0') FROM generate_series(1, 2500) g",
        &[],
    )
    .await
    .unwrap();
    p.db.execute("UPDATE paystream.customer SET anonymised_at = now() WHERE name LIKE 'Bulk %'", &[]).await.unwrap();
    for action in ["INSERT", "UPDATE"] {
        let sizes: Vec<i32> =
            p.db.query(
                "SELECT rows FROM paystream.audit_log WHERE table_name = 'customer' AND action = $1 ORDER BY rows DESC",
                &[&action],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let changes: i64 =
            p.db.query_one(
                "SELECT coalesce(sum(jsonb_array_length(changes)), 0) FROM paystream.audit_trail
                 WHERE table_name = 'customer' AND action = $1",
                &[&action],
            )
            .await
            .unwrap()
            .get(0);
        assert!(sizes.iter().all(|n| *n <= 1000), "{action}: {sizes:?}");
        let expected = if action == "INSERT" { 2500 + 4 } else { 2500 };
        assert_eq!(changes, expected, "{action}: every changed row once ({sizes:?})");
    }
    p.stop().await;
}

/// A row in migration 14's form (its changes as jsonb, as every row written before migration
/// 18) gives the seal the very record migration 14's query built, so days sealed before the
/// change still verify; a row in the typed form gives a record that changes with any of its
/// stored columns, even one its table does not use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seal_records_keep_old_rows_and_cover_every_stored_column() {
    let p = Pipeline::start().await;
    let old: i64 =
        p.db.query_one(
            "INSERT INTO paystream.audit_log (table_name, action, rows, changes, role, txid, at)
             VALUES ('payment', 'INSERT', 1, '[{\"key\": {\"provider\": \"p\", \"provider_payment_id\": \"x\"},
                                               \"new\": {\"amount\": 1.50}}]', 'paystream_processor',
                     pg_current_xact_id(), now())
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let same: bool =
        p.db.query_one(
            "SELECT paystream.audit_seal_record(a)
                    = concat_ws('|', 'audit', a.id, a.table_name, a.action, a.rows, a.changes::text, a.role,
                                a.txid::text, (extract(epoch FROM a.at) * 1000000)::bigint)
             FROM paystream.audit_log a WHERE a.id = $1",
            &[&old],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same, "an old-form row's record is migration 14's");

    let id: i64 =
        p.db.query_one("SELECT max(id) FROM paystream.audit_log WHERE table_name = 'customer'", &[])
            .await
            .unwrap()
            .get(0);
    let before = seal_record(&p, id).await;
    assert!(before.contains("customer_new"), "{before}");
    p.db.execute(
        "UPDATE paystream.audit_log SET installment_old = '{}'::paystream.audit_installment_row[] WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_ne!(seal_record(&p, id).await, before, "a column the row's table does not use is covered too");
    p.stop().await;
}
