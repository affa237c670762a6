//! Where the time goes: the CPU each process of a run spent over a measurement window, from
//! `/proc/<pid>/stat` (user + system time), per payment. PostgreSQL is counted as the
//! postmaster with every process it forked (backends, WAL writer, autovacuum), those that
//! exited within the window included (their time is in the postmaster's `cutime` once it has
//! reaped them); the broker is its JVM. The machine's whole busy time (`/proc/stat`) is
//! reported beside them, so that what no listed process spent (another load on the machine)
//! shows too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use paystream_common::Config;

use super::error::BenchError;
use super::services::db;

/// A process's times, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Times {
    /// Its parent.
    ppid: u32,
    /// User + system time of the process itself (all its threads).
    own: u64,
    /// User + system time of its children that it has waited for.
    children: u64,
}

/// Reads one `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from its closing parenthesis.
fn parse_stat(line: &str) -> Option<Times> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    let ticks = |n: usize| field(n).map(|t| t.max(0) as u64);
    Some(Times {
        ppid: u32::try_from(field(4)?).ok()?,
        own: ticks(14)? + ticks(15)?,
        children: ticks(16)? + ticks(17)?,
    })
}

fn times(pid: u32) -> Option<Times> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process's times, by pid (one pass over `/proc`).
fn all_times() -> BTreeMap<u32, Times> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return BTreeMap::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, times(pid)?)))
        .collect()
}

/// The machine's busy ticks over all cores (`/proc/stat`: user, nice, system, irq, softirq,
/// steal).
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    Some([0, 1, 2, 5, 6, 7].iter().filter_map(|i| cpu.get(*i)).sum())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// What to count under one name.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// One process.
    Process(u32),
    /// A process and every process it forked (PostgreSQL's postmaster).
    Tree(u32),
}

/// The processes of a run, by name.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    targets: Vec<(String, Target)>,
}

impl Processes {
    /// Adds one process.
    pub fn process(&mut self, name: &str, pid: u32) -> &mut Self {
        self.targets.push((name.to_owned(), Target::Process(pid)));
        self
    }

    /// Adds PostgreSQL, when the run's database is served from this machine: the
    /// postmaster is the parent of this session's backend.
    pub async fn postgres(&mut self, config: &Config) -> Result<&mut Self, BenchError> {
        let client = db(config).await?;
        let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        if let Some(postmaster) = u32::try_from(backend).ok().and_then(times).map(|t| t.ppid) {
            self.targets.push(("PostgreSQL".to_owned(), Target::Tree(postmaster)));
        }
        Ok(self)
    }

    /// Adds the broker's JVM: `pid` as given, or the local stack's (the pid file of the node
    /// serving the first configured broker's port under `$TMPDIR/paystream-*`).
    pub fn broker(&mut self, config: &Config, pid: Option<u32>) -> &mut Self {
        if let Some(pid) = pid.or_else(|| local_broker_pid(config)) {
            self.targets.push(("Kafka broker".to_owned(), Target::Process(pid)));
        }
        self
    }

    /// The times now.
    pub fn sample(&self) -> Sample {
        let all = all_times();
        let ticks = self
            .targets
            .iter()
            .map(|(name, target)| {
                let ticks = match *target {
                    Target::Process(pid) => all.get(&pid).map_or(0, |t| t.own + t.children),
                    Target::Tree(root) => {
                        let forked: u64 = all.values().filter(|t| t.ppid == root).map(|t| t.own + t.children).sum();
                        all.get(&root).map_or(0, |t| t.own + t.children) + forked
                    }
                };
                (name.clone(), ticks)
            })
            .collect();
        Sample { at: Instant::now(), ticks, machine: machine_busy() }
    }
}

/// The local stack's broker: `scripts/stack` keeps each node's pid in
/// `$TMPDIR/paystream-<clone>/kafka-<port>/node-1/kafka.pid`.
fn local_broker_pid(config: &Config) -> Option<u32> {
    let port = config.kafka.brokers.split(',').next()?.rsplit(':').next()?.trim().to_owned();
    let tmp: PathBuf = std::env::temp_dir();
    std::fs::read_dir(&tmp)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("paystream-"))
        .filter_map(|e| pid_file(&e.path().join(format!("kafka-{port}/node-1/kafka.pid"))))
        .find(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

fn pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The processes' times at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    ticks: Vec<(String, u64)>,
    machine: Option<u64>,
}

/// One process's CPU over a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    /// The process.
    pub name: String,
    /// CPU milliseconds per payment.
    pub cpu_ms_per_payment: f64,
    /// Cores it kept busy on average over the window.
    pub cores: f64,
}

/// CPU per payment of each process over one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuReport {
    /// The window's length, seconds.
    pub window_s: f64,
    /// Payments applied in it.
    pub payments: u64,
    /// Each listed process, then `machine` (every core's busy time).
    pub processes: Vec<Share>,
}

impl Sample {
    /// What each process spent from `self` to `end`, per payment of `payments`.
    pub fn until(&self, end: &Sample, payments: u64) -> CpuReport {
        let hz = ticks_per_second();
        let window = end.at.saturating_duration_since(self.at).as_secs_f64().max(1e-9);
        let share = |name: &str, ticks: u64| {
            let cpu_s = ticks as f64 / hz;
            Share {
                name: name.to_owned(),
                cpu_ms_per_payment: cpu_s * 1000.0 / payments.max(1) as f64,
                cores: cpu_s / window,
            }
        };
        let mut processes: Vec<Share> = end
            .ticks
            .iter()
            .map(|(name, after)| {
                let before = self.ticks.iter().find(|(n, _)| n == name).map_or(0, |(_, t)| *t);
                share(name, after.saturating_sub(before))
            })
            .collect();
        if let (Some(before), Some(after)) = (self.machine, end.machine) {
            processes.push(share("machine (all cores)", after.saturating_sub(before)));
        }
        CpuReport { window_s: window, payments, processes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times are read after the command name, whatever it holds, and this process's own
    /// line parses with this process's parent.
    #[test]
    fn stat_lines_parse() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 500 0 0 0 120 30 7 3 20 0 4 0 100 0 0";
        assert_eq!(parse_stat(line), Some(Times { ppid: 17, own: 150, children: 10 }));
        assert_eq!(parse_stat("garbage"), None);
        let me = times(std::process::id()).expect("own stat");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
    }

    /// A process that burns CPU between two samples shows it, per payment and in cores.
    #[test]
    fn a_window_counts_what_was_spent() {
        let mut processes = Processes::default();
        processes.process("self", std::process::id());
        let start = processes.sample();
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let report = start.until(&processes.sample(), 10);
        let me = &report.processes[0];
        assert_eq!(me.name, "self");
        assert!(me.cpu_ms_per_payment > 0.0 && me.cores > 0.0, "{report:?}");
    }
}
