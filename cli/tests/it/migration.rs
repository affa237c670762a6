//! Migrations that convert data, run against a database that holds data of the schema
//! before them.

use rust_decimal::Decimal;

use crate::harness::{cli, connect_db};

/// A database migrated up to `version` (inclusive), so that `migrate` then applies only the
/// rest.
async fn database_at(version: i32) -> paystream_common::config::Config {
    let mut config = paystream_common::testing::isolated_config().await;
    let fresh = config.postgres.url.clone();
    let name = format!("{}_at{version}", fresh.rsplit('/').next().unwrap());
    let admin = connect_db(&config).await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    config.postgres.url = format!("{}/{name}", fresh.rsplit_once('/').unwrap().0);
    let mut db = connect_db(&config).await;
    paystream_common::postgres::migrate_up_to(&mut db, version).await.unwrap();
    config
}

/// What the readers of the ledger see: every journal, every posting line, every account's
/// balance and the trial balance, as text.
async fn books(db: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT concat_ws('|', id, kind, reference, created_at) FROM paystream.journal ORDER BY id",
        "SELECT concat_ws('|', journal_id, line, account, currency, amount) FROM paystream.posting ORDER BY journal_id, line",
        "SELECT concat_ws('|', account, currency, balance) FROM paystream.account_balances ORDER BY account, currency",
        "SELECT concat_ws('|', currency, debits, credits) FROM paystream.trial_balance ORDER BY currency",
    ] {
        out.extend(db.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)));
    }
    out
}

/// Migration 22 turns journals and postings into transfers. Journals of two, three and four
/// lines (credit lines before debit lines too, and lines that pair with several of the
/// other side) come back from the views `journal` and `posting` line for line, every
/// balance stays, and a day sealed before the migration verifies after it: the seal's
/// records are the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_ledger_keeps_every_journal_line_balance_and_seal() {
    let config = database_at(21).await;
    let mut db = connect_db(&config).await;
    let journals: [&[(&str, &str)]; 4] = [
        &[("provider_clearing:p", "25.00"), ("receivable:k1", "-25.00")],
        &[("provider_clearing:p", "100.00"), ("receivable:k2", "-70.00"), ("customer_credit:c2", "-30.00")],
        &[("a", "60.00"), ("b", "-50.00"), ("c", "40.00"), ("d", "-50.00")],
        &[("receivable:k4", "-10.00"), ("provider_clearing:p", "10.00")],
    ];
    let tx = db.transaction().await.unwrap();
    for (n, lines) in journals.iter().enumerate() {
        let id: uuid::Uuid = tx
            .query_one(
                "INSERT INTO paystream.journal (id, kind, reference)
                 VALUES (paystream.uuid_v7_from(now(), gen_random_uuid()), 'payment', $1) RETURNING id",
                &[&format!("test/{n}")],
            )
            .await
            .unwrap()
            .get(0);
        let (accounts, amounts): (Vec<String>, Vec<Decimal>) =
            lines.iter().map(|(a, m)| ((*a).to_owned(), m.parse::<Decimal>().unwrap())).unzip();
        tx.execute(
            "INSERT INTO paystream.posting (journal_id, line, account, currency, amount)
             SELECT $1, (n - 1)::smallint, a, 'BRL', m FROM unnest($2::text[], $3::numeric[]) WITH ORDINALITY AS u(a, m, n)",
            &[&id, &accounts, &amounts],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let before = books(&db).await;
    let today: String = db.query_one("SELECT (now() AT TIME ZONE 'UTC')::date::text", &[]).await.unwrap().get(0);
    let (ok, out, err) = cli(&config, &["audit", "seal", "--date", &today]);
    assert!(ok, "seal before the migration: {out}{err}");

    assert_eq!(paystream_common::postgres::migrate(&mut db).await.unwrap(), 1, "migration 22 alone");
    assert_eq!(books(&db).await, before, "journals, posting lines and balances as they were");
    let transfers: Vec<(i16, i16, Decimal)> = db
        .query(
            "SELECT t.debit_line, t.credit_line, t.amount FROM paystream.transfer t
             WHERE t.reference = 'test/2' ORDER BY t.seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    assert_eq!(transfers, vec![(0, 1, d("50.00")), (0, 3, d("10.00")), (2, 3, d("40.00"))], "the four-line journal");
    let count: i64 = db.query_one("SELECT count(*) FROM paystream.transfer", &[]).await.unwrap().get(0);
    assert_eq!(count, 1 + 2 + 3 + 1);
    let (ok, out, err) = cli(&config, &["audit", "verify"]);
    assert!(ok && out.contains("verified 1 sealed day"), "the seal made before the migration verifies: {out}{err}");
}
