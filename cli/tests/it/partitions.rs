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
