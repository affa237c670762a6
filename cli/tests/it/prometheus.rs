//! A private Prometheus (Debian's `prometheus` binary, installed by
//! `scripts/packages prometheus`) on a free loopback port, scraping a test's services every
//! second and evaluating a set of rules every second, with the HTTP API to read it back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

/// The alert rules of the repository.
pub const ALERTS: &str = include_str!("../../../docker/prometheus/alerts.yml");

/// An alert as `/api/v1/alerts` shows it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
}

/// A running Prometheus; stopped (SIGKILL) and its data removed on drop.
pub struct Prometheus {
    pub addr: SocketAddr,
    child: std::process::Child,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job name, admin address) every second with
    /// `rules` (an alerts.yml text) evaluated every second; waits until it is ready.
    pub async fn start(targets: &[(&str, SocketAddr)], rules: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("paystream-prometheus-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("alerts.yml"), rules).unwrap();
        let mut config = String::from(
            "global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }\nrule_files: [alerts.yml]\nscrape_configs:\n",
        );
        for (job, addr) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs: [{{ targets: [\"{addr}\"] }}]\n"));
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the prometheus binary (scripts/packages prometheus)");
        let prometheus = Self { addr, child, dir, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus.http.get(format!("http://{addr}/-/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not get ready: {}", prometheus.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str) -> Value {
        let text = self.http.get(format!("http://{}{path}", self.addr)).send().await.unwrap().text().await.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["status"], "success", "{path}: {text}");
        value["data"].clone()
    }

    /// The alerts pending or firing now.
    pub async fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts").await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| Alert {
                name: a["labels"]["alertname"].as_str().unwrap_or_default().to_owned(),
                state: a["state"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Whether `name` is firing now.
    pub async fn firing(&self, name: &str) -> bool {
        self.alerts().await.iter().any(|a| a.name == name && a.state == "firing")
    }

    /// The samples of an instant query.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql))).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `condition` holds for this Prometheus, or `timeout`; whether it held.
    pub async fn wait_until<F, Fut>(&self, timeout: Duration, mut condition: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if condition().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but unreserved characters (a query parameter).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The repository's rules with durations a test can wait for: every `for:` becomes 1 s and
/// the backlog threshold 3 s instead of a minute. The expressions are otherwise the real
/// ones, so what a test shows is that the services' metrics, Prometheus's scrape and the
/// rules fit together; the real durations and thresholds are what `promtool test rules`
/// checks (docker/prometheus/alerts.test.yml). Each replacement must match, so a changed rule
/// fails here instead of silently testing the long durations.
pub fn fast_rules() -> String {
    let backlog = "max(paystream_processor_outbox_oldest_age_seconds) > 60";
    assert!(ALERTS.contains(backlog), "the backlog rule changed: update fast_rules");
    let rules = ALERTS.replace(backlog, "max(paystream_processor_outbox_oldest_age_seconds) > 3");
    let mut out = String::with_capacity(rules.len());
    let mut shortened = 0;
    for line in rules.lines() {
        match line.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                out.push_str(indent);
                out.push_str("for: 1s");
                shortened += 1;
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(shortened > 0, "no `for:` found in alerts.yml");
    out
}
