//! `paystream audit seal|verify`: tamper evidence for the audit trail and the ledger.
//!
//! A seal of day D (UTC) is a SHA-256 over D, the previous seal's hash, and D's records (its
//! audit rows by id, then its journals with their postings), so each seal vouches for every
//! day before it: changing, adding or removing one record of a sealed day, or a seal, breaks
//! that day's hash or the next day's link. `verify` recomputes every sealed day from the
//! tables and names the first that no longer holds. Both run as `paystream_jobs`, which may
//! read the audit log and ledger and add seals, but change neither.
//!
//! A seal is only as good as its copy elsewhere: an operator who can rewrite both the rows and
//! every later seal can forge a consistent chain, so the latest hash is printed, to be kept
//! outside the database (a ticket, a write-once bucket).

use clap::Subcommand;
use sha2::{Digest, Sha256};

use paystream_common::config::DbPart;
use paystream_common::{postgres, Config};

const RECORDS: &str = include_str!("../sql/audit_records_select_by_day.sql");
const SEALS: &str = include_str!("../sql/audit_seal_select.sql");
const LATEST: &str = include_str!("../sql/audit_seal_select_latest.sql");
const INSERT: &str = include_str!("../sql/audit_seal_insert.sql");

/// The `prev_hash` of the first seal: nothing came before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Names this hashing scheme, so that a change of scheme cannot collide with an old seal.
const DOMAIN: &[u8] = b"paystream-audit-seal-v1";

#[derive(Subcommand)]
pub enum Audit {
    /// Seal one day (UTC): hash its audit rows and journals, chained to the previous seal.
    /// Run it once the day is over; a day is sealed once, and never before a sealed day.
    Seal {
        /// The day, YYYY-MM-DD (UTC).
        #[arg(long)]
        date: String,
    },
    /// Recompute every sealed day; exit non-zero naming the first that was altered.
    Verify,
}

/// The hash of a day's seal: SHA-256 over the scheme's name, the day, the previous seal's
/// hash and every record, each length-prefixed so that no two sequences of records hash alike
/// (`ab`,`c` and `a`,`bc` differ). Lower-case hex.
pub fn seal_hash<S: AsRef<str>>(day: &str, prev_hash: &str, records: &[S]) -> String {
    let mut hasher = Sha256::new();
    for part in [DOMAIN, day.as_bytes(), prev_hash.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update((records.len() as u64).to_be_bytes());
    for record in records {
        let record = record.as_ref().as_bytes();
        hasher.update((record.len() as u64).to_be_bytes());
        hasher.update(record);
    }
    hex::encode(hasher.finalize())
}

/// A stored seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The day, YYYY-MM-DD.
    pub day: String,
    /// The previous seal's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// This day's hash.
    pub hash: String,
    /// How many records it covers.
    pub rows: i64,
}

/// Why a sealed day no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// Its records hash differently than when it was sealed: a row of that day was changed,
    /// added or removed.
    Records {
        /// The day.
        day: String,
        /// Records now, and when sealed.
        rows_now: usize,
        /// Records when sealed.
        rows_sealed: i64,
    },
    /// Its `prev_hash` is not the previous seal's hash: a seal was changed, added or removed.
    Chain {
        /// The day.
        day: String,
    },
}

impl Broken {
    /// The altered day.
    pub fn day(&self) -> &str {
        match self {
            Broken::Records { day, .. } | Broken::Chain { day } => day,
        }
    }
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Records { day, rows_now, rows_sealed } => write!(
                f,
                "{day}: its records no longer match its seal ({rows_now} records now, {rows_sealed} when sealed)"
            ),
            Broken::Chain { day } => write!(f, "{day}: its seal does not chain to the previous day's seal"),
        }
    }
}

/// The first sealed day, oldest first, that does not hold: `records[i]` are the records of
/// `seals[i]`'s day as they are now. `None` when the whole chain holds.
pub fn first_broken<S: AsRef<str>>(seals: &[Seal], records: &[Vec<S>]) -> Option<Broken> {
    debug_assert_eq!(seals.len(), records.len());
    let mut prev = GENESIS;
    for (seal, records) in seals.iter().zip(records) {
        if seal.prev_hash != prev {
            return Some(Broken::Chain { day: seal.day.clone() });
        }
        if seal_hash(&seal.day, &seal.prev_hash, records) != seal.hash {
            return Some(Broken::Records { day: seal.day.clone(), rows_now: records.len(), rows_sealed: seal.rows });
        }
        prev = &seal.hash;
    }
    None
}

async fn records(client: &impl tokio_postgres::GenericClient, day: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client.query(RECORDS, &[&day]).await?.into_iter().map(|r| r.get(0)).collect())
}

/// Runs an `audit` subcommand; `false` when `verify` found an altered day.
pub async fn run(config: &Config, command: Audit) -> anyhow::Result<bool> {
    let mut client = postgres::connect(&config.postgres.as_part(DbPart::Jobs), "paystream-cli", None).await?;
    match command {
        Audit::Seal { date } => {
            let day = time::Date::parse(&date, &time::format_description::well_known::Iso8601::DATE)
                .map_err(|_| anyhow::anyhow!("--date {date:?} is not a day (YYYY-MM-DD)"))?;
            let day = format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day());
            let tx = client.transaction().await?;
            // One sealer at a time: two concurrent seals would both chain to the same day.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('paystream.audit_seal'))", &[]).await?;
            let prev = match tx.query_opt(LATEST, &[]).await? {
                Some(row) => {
                    let (last, hash): (String, String) = (row.get(0), row.get(1));
                    if last >= day {
                        anyhow::bail!(
                            "{day} cannot be sealed: {last} is sealed already (a day is sealed once, in order)"
                        );
                    }
                    hash
                }
                None => GENESIS.to_owned(),
            };
            let records = records(&tx, &day).await?;
            let hash = seal_hash(&day, &prev, &records);
            let rows = i64::try_from(records.len())?;
            tx.execute(INSERT, &[&day, &prev, &hash, &rows]).await?;
            tx.commit().await?;
            println!("sealed {day}: {rows} records, hash {hash} (previous {prev})");
        }
        Audit::Verify => {
            let seals: Vec<Seal> = client
                .query(SEALS, &[])
                .await?
                .into_iter()
                .map(|r| Seal { day: r.get(0), prev_hash: r.get(1), hash: r.get(2), rows: r.get(3) })
                .collect();
            let mut now = Vec::with_capacity(seals.len());
            for seal in &seals {
                now.push(records(&client, &seal.day).await?);
            }
            if let Some(broken) = first_broken(&seals, &now) {
                println!("first altered day: {}", broken.day());
                println!("  {broken}");
                return Ok(false);
            }
            match seals.last() {
                Some(last) => {
                    println!("verified {} sealed days, through {} (hash {})", seals.len(), last.day, last.hash)
                }
                None => println!("nothing sealed yet"),
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(days: &[(&str, &[&str])]) -> (Vec<Seal>, Vec<Vec<String>>) {
        let mut prev = GENESIS.to_owned();
        let mut seals = Vec::new();
        let mut records = Vec::new();
        for (day, recs) in days {
            let hash = seal_hash(day, &prev, recs);
            seals.push(Seal {
                day: (*day).into(),
                prev_hash: prev.clone(),
                hash: hash.clone(),
                rows: recs.len() as i64,
            });
            records.push(recs.iter().map(|r| (*r).to_owned()).collect());
            prev = hash;
        }
        (seals, records)
    }

    /// The hash is SHA-256 in lower-case hex, depends on the day, the link and every record,
    /// and records are framed: moving a byte from one record to the next changes it.
    #[test]
    fn the_hash_covers_day_link_and_framed_records() {
        let base = seal_hash("2026-12-04", GENESIS, &["ab", "c"]);
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(base, seal_hash("2026-12-04", GENESIS, &["ab", "c"]), "deterministic");
        assert_ne!(base, seal_hash("2026-12-04", GENESIS, &["a", "bc"]));
        assert_ne!(base, seal_hash("2026-12-05", GENESIS, &["ab", "c"]));
        assert_ne!(base, seal_hash("2026-12-04", &"1".repeat(64), &["ab", "c"]));
        assert_ne!(base, seal_hash("2026-12-04", GENESIS, &["ab", "c", ""]));
        assert_ne!(seal_hash::<&str>("2026-12-04", GENESIS, &[]), seal_hash("2026-12-04", GENESIS, &[""]));
    }

    /// An intact chain verifies; a changed, added or removed record names its day; a seal
    /// whose link was rewritten names its day, even when its own hash was recomputed to match.
    #[test]
    fn verify_names_the_first_altered_day() {
        let (seals, records) = chain(&[("2026-12-01", &["a1", "a2"]), ("2026-12-02", &[]), ("2026-12-03", &["c1"])]);
        assert_eq!(first_broken(&seals, &records), None);

        let mut changed = records.clone();
        changed[0][1] = "a2 altered".into();
        changed[2][0] = "c1 altered".into();
        assert_eq!(first_broken(&seals, &changed).map(|b| b.day().to_owned()), Some("2026-12-01".into()));

        let mut added = records.clone();
        added[1].push("late".into());
        let broken = first_broken(&seals, &added).unwrap();
        assert_eq!(broken, Broken::Records { day: "2026-12-02".into(), rows_now: 1, rows_sealed: 0 });

        let mut removed = records.clone();
        removed[2].clear();
        assert_eq!(first_broken(&seals, &removed).map(|b| b.day().to_owned()), Some("2026-12-03".into()));

        // Day 2 resealed over altered records, with a link that still names day 1: its own
        // hash holds, the next day's link does not.
        let mut forged = seals.clone();
        forged[1].hash = seal_hash(&forged[1].day, &forged[1].prev_hash, &["forged"]);
        let mut forged_records = records.clone();
        forged_records[1] = vec!["forged".into()];
        assert_eq!(first_broken(&forged, &forged_records), Some(Broken::Chain { day: "2026-12-03".into() }));

        // A seal removed from the middle: the next one's link breaks.
        let (mut gap_seals, mut gap_records) = (seals.clone(), records.clone());
        gap_seals.remove(1);
        gap_records.remove(1);
        assert_eq!(first_broken(&gap_seals, &gap_records), Some(Broken::Chain { day: "2026-12-03".into() }));
    }
}
