//! The audit trail's cost on the processor, measured interleaved: batched processor runs
//! (uniform over 100,000 installments, as `paystream-bench bench`'s processor part) with the
//! audit triggers disabled, with the functions migrations generated, and with the trigger
//! functions of each file given (e.g. a dump of an older migration's), round after round, so
//! that a noisy machine disturbs every variant alike.
//!
//! `cargo run --release -p paystream-benchmarks --example audit_ab -- ROUNDS MESSAGES [FUNCTIONS.sql ...]`
//! with the environment of `scripts/stack env`. It alters the triggers and functions of the
//! configured database (`postgres.url`, as a superuser): point it at a database of its own.
//! The functions are generated again (`paystream.audit_generate`) at the end.

use paystream_benchmarks::bench::{processor, services};

/// The tables migration 14 audits.
const AUDITED: [&str; 5] = ["contract", "installment", "payment", "reversal", "customer"];

fn triggers(on: bool) -> String {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    AUDITED
        .iter()
        .map(|t| {
            format!(
                "ALTER TABLE paystream.{t} {verb} TRIGGER audit_insert, {verb} TRIGGER audit_update, \
                 {verb} TRIGGER audit_delete;"
            )
        })
        .collect()
}

fn generated() -> String {
    AUDITED.iter().map(|t| format!("CALL paystream.audit_generate('{t}');")).collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).expect("ROUNDS");
    let messages: u64 = args.get(2).and_then(|a| a.parse().ok()).expect("MESSAGES");
    let mut variants = vec![("off".to_owned(), triggers(false)), ("on".to_owned(), triggers(true) + &generated())];
    for file in &args[3..] {
        let sql = std::fs::read_to_string(file).expect("a functions file");
        variants.push((file.clone(), triggers(true) + &sql));
    }
    let path = std::env::var("PAYSTREAM_CONFIG").ok().map(std::path::PathBuf::from);
    let config = paystream_common::Config::load(path.as_deref()).expect("configuration");
    let client = services::db(&config).await.expect("database");
    for round in 1..=rounds {
        for (name, sql) in &variants {
            client.batch_execute(sql).await.expect("switch the audit triggers");
            let run = processor::processor(&config, messages, 100_000, config.processor.batch_max)
                .await
                .expect("processor run");
            println!("round {round} {name}: {:.0} payments/s uniform", run.payments_per_s);
        }
    }
    client.batch_execute(&(triggers(true) + &generated())).await.expect("restore the audit triggers");
}
