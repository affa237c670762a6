//! Monthly partitions that cannot fail an insert (migration 16): rows for a month nobody
//! created land in DEFAULT and show in `paystream.partition_default_rows`; `paystream
//! partitions maintain` moves them into their month and attaches it; old months detach for
//! archiving. The commands run as the jobs role, as an operator's would.

use crate::harness::{cli, Pipeline};

async fn in_default(p: &Pipeline, parent: &str) -> i64 {
    p.db.query_one("SELECT rows FROM paystream.partition_default_rows WHERE parent = $1", &[&parent])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_at_a_month_without_partition_land_in_default_then_move_to_their_month() {
    let p = Pipeline::start().await;
    // The first instant of the sixth month ahead: the migration created this month and three
    // ahead, so nothing holds it. An audit row there, and charges on an old business date.
    let at: String =
        p.db.query_one(
            "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '6 months', 'YYYY-MM-DD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    p.db.execute(
        "INSERT INTO paystream.audit_log (table_name, action, rows, changes, role, txid, at)
         VALUES ('contract', 'UPDATE', 1, '[]', 'paystream_jobs', pg_current_xact_id(), ($1 || ' 00:00:00+00')::timestamptz)",
        &[&at],
    )
    .await
    .unwrap();
    let installment: uuid::Uuid =
        p.db.query_one("SELECT id FROM paystream.installment LIMIT 1", &[]).await.unwrap().get(0);
    p.db.execute(
        "INSERT INTO paystream.charge (installment_id, business_date, kind, amount, base, days, journal_id)
         VALUES ($1, '2020-01-01', 'interest', 1.00, 100.00, 30, gen_random_uuid())",
        &[&installment],
    )
    .await
    .unwrap();
    assert_eq!((in_default(&p, "audit_log").await, in_default(&p, "charge").await), (1, 1), "the inserts did not fail");
    let (ok, out, _) = cli(&p.config, &["partitions", "status"]);
    assert!(!ok && out.contains("rows in DEFAULT"), "status fails while DEFAULT holds rows: {out}");

    let (ok, out, err) = cli(&p.config, &["partitions", "maintain"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("moved out of default, attached (1 rows)"), "{out}");
    assert_eq!((in_default(&p, "audit_log").await, in_default(&p, "charge").await), (0, 0));
    let month = at[..7].replace('-', "_");
    let home: String =
        p.db.query_one(
            "SELECT tableoid::regclass::text FROM paystream.audit_log WHERE at = ($1 || ' 00:00:00+00')::timestamptz",
            &[&at],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(home, format!("paystream.audit_log_p{month}"));
    let (ok, _, _) = cli(&p.config, &["partitions", "status"]);
    assert!(ok, "DEFAULT is empty again");
    // Running it again changes nothing.
    let (ok, out, _) = cli(&p.config, &["partitions", "maintain"]);
    assert!(ok && out.contains("partitions: 0 created or attached"), "{out}");

    // January 2020 is past retention: detached, kept as a table of its own to archive.
    let (ok, out, err) = cli(&p.config, &["partitions", "detach", "--before", "2020-02-01"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("detached charge_p2020_01") && out.contains("partitions: 1 detached"), "{out}");
    let left: i64 =
        p.db.query_one("SELECT count(*) FROM paystream.charge WHERE business_date = '2020-01-01'", &[])
            .await
            .unwrap()
            .get(0);
    let archived: i64 = p.db.query_one("SELECT count(*) FROM paystream.charge_p2020_01", &[]).await.unwrap().get(0);
    assert_eq!((left, archived), (0, 1));
    p.stop().await;
}

/// The ledger (migrations 20 and 22) is partitioned by the month in its version-7 journal
/// ids: a journal at the last millisecond of the last month created lands in that month, one at the
/// first millisecond after it in DEFAULT (the insert does not fail, the view says so);
/// maintenance moves its transfer into the month it attaches; no month's rows can be
/// updated or deleted, through the parent or the partition; ledger months are not detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_rows_past_the_last_month_land_in_default_then_move_to_their_month() {
    let p = Pipeline::start().await;
    let (last, next): (String, String) = {
        let row =
            p.db.query_one(
                "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months', 'YYYY_MM'),
                        to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '4 months', 'YYYY_MM')",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let before_balance: Vec<(String, rust_decimal::Decimal)> = trial_balance(&p).await;
    // Two journals either side of the boundary, one transfer each, as the processor writes them.
    let ids: Vec<uuid::Uuid> = p
        .db
        .query(
            "WITH b AS (SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '4 months') AT TIME ZONE 'UTC' AS at)
             SELECT paystream.uuid_v7_from(at - interval '1 millisecond', gen_random_uuid()) FROM b
             UNION ALL
             SELECT paystream.uuid_v7_from(at, gen_random_uuid()) FROM b",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    p.db.execute(
        "INSERT INTO paystream.transfer (journal_id, seq, kind, reference, debit_line, debit_account, credit_line,
                                         credit_account, currency, amount)
         SELECT id, 0, 'test', 'boundary/' || id, 0, 'provider_clearing:test', 1, 'unapplied_cash:test', 'BRL', 1.00
         FROM unnest($1::uuid[]) id",
        &[&ids],
    )
    .await
    .unwrap();
    let home = |id: uuid::Uuid| {
        let db = &p.db;
        async move {
            db.query_one("SELECT tableoid::regclass::text FROM paystream.transfer WHERE journal_id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(home(ids[0]).await, format!("paystream.transfer_p{last}"));
    assert_eq!(home(ids[1]).await, "paystream.transfer_default");
    assert_eq!(in_default(&p, "transfer").await, 1, "the insert did not fail");
    let (ok, out, _) = cli(&p.config, &["partitions", "status"]);
    assert!(!ok && out.contains("rows in DEFAULT"), "{out}");

    let (ok, out, err) = cli(&p.config, &["partitions", "maintain"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&format!("transfer_p{next}")), "{out}");
    assert_eq!(in_default(&p, "transfer").await, 0);
    assert_eq!(home(ids[1]).await, format!("paystream.transfer_p{next}"));
    let moved: i64 =
        p.db.query_one("SELECT count(*) FROM paystream.posting WHERE journal_id = $1", &[&ids[1]])
            .await
            .unwrap()
            .get(0);
    assert_eq!(moved, 2, "the moved journal's two lines");
    let mut expected = before_balance.clone();
    for (_, total) in expected.iter_mut() {
        *total += rust_decimal::Decimal::new(200, 2);
    }
    assert_eq!(trial_balance(&p).await, expected, "the move changed no posting");

    // Append-only through the partitions as through the parent, even for the superuser.
    for statement in [
        format!("DELETE FROM paystream.transfer_p{next}"),
        format!("UPDATE paystream.transfer_p{next} SET amount = amount"),
        format!("DELETE FROM paystream.transfer_p{last}"),
        "UPDATE paystream.transfer SET kind = kind".to_owned(),
    ] {
        let e = p.db.execute(statement.as_str(), &[]).await.expect_err(&statement);
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::RESTRICT_VIOLATION), "{statement}: {e}");
    }
    // Balances are sums over every transfer: the ledger's months stay attached.
    let (ok, out, err) = cli(&p.config, &["partitions", "detach", "--before", "2100-01-01"]);
    assert!(ok, "{out}\n{err}");
    assert!(!out.contains("transfer_p"), "{out}");
    p.stop().await;
}

async fn trial_balance(p: &Pipeline) -> Vec<(String, rust_decimal::Decimal)> {
    p.db.query("SELECT currency::text, debits FROM paystream.trial_balance ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}
