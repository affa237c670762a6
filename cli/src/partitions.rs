//! `paystream partitions`: the monthly partitions of the audit log and the accrual charges
//! (migration 16): keep months ahead and empty DEFAULT, show what sits in DEFAULT, detach old
//! months for archiving.

use clap::Subcommand;
use time::Date;

use paystream_common::config::DbPart;
use paystream_common::{postgres, Config};

/// `paystream partitions` subcommands.
#[derive(Subcommand)]
pub enum Partitions {
    /// Move rows out of each DEFAULT partition into their months (attaching them) and create
    /// the months ahead. Safe to run at any time, as often as wanted (daily from a scheduler).
    Maintain {
        /// Months to keep ahead of the current one (0 to 36).
        #[arg(long, default_value_t = 3)]
        months_ahead: i32,
    },
    /// Rows in each DEFAULT partition (zero unless a month was missing).
    Status,
    /// Detach the months that end on or before DATE, to archive (`pg_dump -t`) and drop.
    Detach {
        /// YYYY-MM-DD: months ending on or before it are detached.
        #[arg(long, value_parser = crate::lifecycle::parse_date)]
        before: Date,
    },
}

/// Runs a `partitions` subcommand; false when DEFAULT holds rows (`status`).
pub async fn run(config: &Config, command: Partitions) -> anyhow::Result<bool> {
    let client = postgres::connect(&config.postgres.as_part(DbPart::Jobs), "paystream-cli", None).await?;
    match command {
        Partitions::Maintain { months_ahead } => {
            let rows = client.query(include_str!("../sql/partitions_maintain.sql"), &[&months_ahead]).await?;
            for r in &rows {
                println!(
                    "{:<10} {:<24} {} ({} rows)",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, i64>(3)
                );
            }
            println!("partitions: {} created or attached", rows.len());
            Ok(true)
        }
        Partitions::Status => {
            let rows = client
                .query("SELECT parent, rows, oldest FROM paystream.partition_default_rows ORDER BY 1", &[])
                .await?;
            let mut clean = true;
            for r in &rows {
                let n: i64 = r.get(1);
                clean &= n == 0;
                let oldest = r.get::<_, Option<Date>>(2).map_or_else(|| "-".to_owned(), |d| d.to_string());
                println!("{:<10} {:>10} rows in DEFAULT, oldest {oldest}", r.get::<_, String>(0), n);
            }
            if !clean {
                println!("run `paystream partitions maintain` to move them into their months");
            }
            Ok(clean)
        }
        Partitions::Detach { before } => {
            let rows = client.query(include_str!("../sql/partitions_detach.sql"), &[&before]).await?;
            for r in &rows {
                println!(
                    "detached {} from {}: archive it (pg_dump -t paystream.{}) and drop it",
                    r.get::<_, String>(1),
                    r.get::<_, String>(0),
                    r.get::<_, String>(1)
                );
            }
            println!("partitions: {} detached", rows.len());
            Ok(true)
        }
    }
}
