//! Alerts, dashboard and metric catalogue against running services: the rules of
//! docker/prometheus/alerts.yml evaluated by a real Prometheus scraping the services.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::{cli, Pipeline};
use crate::prometheus::{fast_rules, Prometheus};

/// A Prometheus scraping the pipeline's three admin ports under their stack job names.
async fn prometheus_for(pipeline: &Pipeline) -> Prometheus {
    let [ingest, processor, relay] = pipeline.admin;
    Prometheus::start(
        &[("paystream-ingest", ingest), ("paystream-processor", processor), ("paystream-relay", relay)],
        &fast_rules(),
    )
    .await
}

/// The backlog alert fires while the relay is stopped and webhooks keep arriving (the figure
/// comes from the processor, so it survives the relay's absence), the service-down alert
/// names the relay meanwhile, and both resolve once the relay is back and has drained the
/// outbox.
#[tokio::test(flavor = "multi_thread")]
async fn backlog_alert_fires_while_the_relay_is_stopped_and_resolves_after() {
    let mut pipeline = Pipeline::start().await;
    let prometheus = prometheus_for(&pipeline).await;
    let scraped = prometheus
        .wait_until(Duration::from_secs(30), || async {
            !prometheus.query("paystream_processor_outbox_oldest_age_seconds").await.is_empty()
        })
        .await;
    assert!(scraped, "the processor's backlog gauge reaches Prometheus: {}", prometheus.log());
    assert!(!prometheus.firing("PaystreamOutboxBacklogOld").await, "quiet while the relay drains");

    pipeline.stop_relay().await;
    let installments = pipeline.installments().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut sent, mut fired) = (0usize, false);
    while Instant::now() < deadline {
        let (installment, _) = installments[sent % installments.len()];
        let (headers, body) = pipeline.payment(&format!("evt_{sent}"), &format!("pay_{sent}"), installment, "1.00");
        let (status, answer) = pipeline.post("demo-standard", &headers, &body).await;
        assert_eq!(status, 202, "{answer}");
        sent += 1;
        if prometheus.firing("PaystreamOutboxBacklogOld").await {
            fired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(fired, "PaystreamOutboxBacklogOld fires after {sent} webhooks with the relay stopped");
    let relay_down = prometheus
        .wait_until(Duration::from_secs(30), || async { prometheus.firing("PaystreamServiceDown").await })
        .await;
    assert!(relay_down, "PaystreamServiceDown fires for the stopped relay");

    pipeline.start_relay().await;
    let resolved = prometheus
        .wait_until(Duration::from_secs(90), || async {
            !prometheus
                .alerts()
                .await
                .iter()
                .any(|a| a.name == "PaystreamOutboxBacklogOld" || a.name == "PaystreamServiceDown")
        })
        .await;
    assert!(resolved, "both alerts resolve with the relay back: {:?}", prometheus.alerts().await);
    let left = pipeline.wait_count("SELECT count(*) FROM paystream.outbox", 0, Duration::from_secs(30)).await;
    assert_eq!(left, 0, "the relay drained the outbox");
    pipeline.stop().await;
}

/// A record without the inbound MAC is dead-lettered and the dead-letter alert fires; before
/// it, with the counter scraped at 0, it does not.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_alert_fires_after_a_poison_message() {
    let pipeline = Pipeline::start().await;
    let prometheus = prometheus_for(&pipeline).await;
    let counter = r#"paystream_processor_messages_total{outcome="dead_lettered"}"#;
    let scraped =
        prometheus.wait_until(Duration::from_secs(30), || async { !prometheus.query(counter).await.is_empty() }).await;
    assert!(scraped, "the dead-letter counter is scraped at 0 before any dead letter: {}", prometheus.log());
    assert!(!prometheus.firing("PaystreamDeadLetters").await);

    let installment = pipeline.installments().await[0].0;
    pipeline.produce_raw(&installment.to_string(), format!("not avro {}", Uuid::new_v4()).as_bytes(), false).await;
    let dead = pipeline.wait_count("SELECT count(*) FROM paystream.dead_letters", 1, Duration::from_secs(60)).await;
    assert_eq!(dead, 1);
    let fired = prometheus
        .wait_until(Duration::from_secs(60), || async { prometheus.firing("PaystreamDeadLetters").await })
        .await;
    assert!(fired, "PaystreamDeadLetters fires: {:?}", prometheus.alerts().await);
    pipeline.stop().await;
}

/// A business date moved and not accrued: once it has gone unaccrued for more than four hours
/// (set back five here) PaystreamAccrualNotRun fires for its calendar, and `paystream accrue`
/// resolves it.
#[tokio::test(flavor = "multi_thread")]
async fn accrual_alert_fires_for_an_unaccrued_business_date_and_resolves_after_the_run() {
    let pipeline = Pipeline::start().await;
    let prometheus = prometheus_for(&pipeline).await;
    let (ok, out, err) = cli(&pipeline.config, &["business-date", "advance", "--to", "2026-02-11"]);
    assert!(ok, "{out}\n{err}");
    let gauge = r#"paystream_processor_accrual_pending_seconds{calendar="BRL"}"#;
    let scraped =
        prometheus.wait_until(Duration::from_secs(30), || async { !prometheus.query(gauge).await.is_empty() }).await;
    assert!(scraped, "the accrual gauge reaches Prometheus: {}", prometheus.log());
    assert!(!prometheus.firing("PaystreamAccrualNotRun").await, "quiet: the date moved just now");

    pipeline
        .db
        .execute(
            "UPDATE paystream.business_date SET updated_at = now() - interval '5 hours' WHERE calendar = 'BRL'",
            &[],
        )
        .await
        .unwrap();
    let fired = prometheus
        .wait_until(Duration::from_secs(60), || async { prometheus.firing("PaystreamAccrualNotRun").await })
        .await;
    assert!(fired, "PaystreamAccrualNotRun fires: {:?}", prometheus.alerts().await);

    let (ok, out, err) = cli(&pipeline.config, &["accrue", "--quiet"]);
    assert!(ok, "{out}\n{err}");
    let resolved = prometheus
        .wait_until(Duration::from_secs(60), || async {
            !prometheus.alerts().await.iter().any(|a| a.name == "PaystreamAccrualNotRun")
        })
        .await;
    assert!(resolved, "resolved after the run: {:?}", prometheus.alerts().await);
    pipeline.stop().await;
}

/// The metric names of docs/metrics.md's tables, each with the service of its section.
fn catalogued() -> BTreeMap<String, String> {
    let text = include_str!("../../../docs/metrics.md");
    let mut service = String::new();
    let mut names = BTreeMap::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            service = heading.split_whitespace().next().unwrap_or_default().to_owned();
        } else if let Some(cell) = line.strip_prefix("| `") {
            let name = cell.split('`').next().unwrap_or_default();
            assert!(names.insert(name.to_owned(), service.clone()).is_none(), "{name} is listed twice");
        }
    }
    names
}

/// Every `paystream_*` name in a text (PromQL expressions of the rules or the dashboard),
/// with a histogram's `_bucket`, `_count` and `_sum` series named by their histogram.
fn named_in(text: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("paystream_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| histograms.contains(*base)))
            .unwrap_or(name);
        // Job names (paystream-ingest) and label values are not metric names.
        if base.matches('_').count() >= 2 {
            names.insert(base.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// `# TYPE` and `# HELP` names of a scrape.
fn scrape_names(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_owned(), kind.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split_whitespace().next().unwrap_or_default().to_owned());
        }
    }
    (types, helped)
}

/// Every metric the alert rules and the dashboard name exists in a live scrape of the
/// services after a few webhooks, a forged one and a poison message; every exported metric
/// has a HELP line; and docs/metrics.md lists exactly the metrics exported, each under its
/// service, with its type.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_named_is_exported_and_catalogued() {
    let pipeline = Pipeline::start().await;
    let installments = pipeline.installments().await;
    for (n, (installment, _)) in installments.iter().take(3).enumerate() {
        let (headers, body) = pipeline.payment(&format!("evt_{n}"), &format!("pay_{n}"), *installment, "5.00");
        assert_eq!(pipeline.post("demo-standard", &headers, &body).await.0, 202);
    }
    let (mut headers, body) = pipeline.payment("evt_forged", "pay_forged", installments[0].0, "5.00");
    headers.retain(|(name, _)| *name != "webhook-signature");
    headers.push(("webhook-signature", "v1,Zm9yZ2Vk".into()));
    assert_eq!(pipeline.post("demo-standard", &headers, &body).await.0, 401);
    pipeline.produce_raw(&installments[1].0.to_string(), b"poison", false).await;
    // A calendar with a business date, for the accrual gauge.
    let (ok, out, err) = cli(&pipeline.config, &["business-date", "advance", "--to", "2026-02-11"]);
    assert!(ok, "{out}\n{err}");

    let catalogue = catalogued();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (types, helped) = loop {
        let mut types = BTreeMap::new();
        let mut helped = BTreeSet::new();
        for admin in pipeline.admin {
            let text = pipeline.http.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
            let (t, h) = scrape_names(&text);
            types.extend(t.into_iter().filter(|(name, _)| name.starts_with("paystream_")));
            helped.extend(h);
        }
        // Gauges sampled every few seconds and the histograms of the first batches appear
        // late: wait for the catalogue's names, then compare whatever was seen.
        if catalogue.keys().all(|name| types.contains_key(name)) || Instant::now() >= deadline {
            break (types, helped);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let exported: BTreeSet<String> = types.keys().cloned().collect();
    let listed: BTreeSet<String> = catalogue.keys().cloned().collect();
    assert_eq!(
        listed.difference(&exported).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "listed in docs/metrics.md, not exported"
    );
    assert_eq!(
        exported.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exported, not listed in docs/metrics.md"
    );
    for (name, service) in &catalogue {
        assert!(name.starts_with(&format!("paystream_{service}_")), "{name} is listed under {service}");
        assert!(helped.contains(name), "{name} has no HELP line (describe it in its telemetry module)");
    }
    let doc = include_str!("../../../docs/metrics.md");
    for (name, kind) in &types {
        let row = doc.lines().find(|l| l.starts_with(&format!("| `{name}` |"))).unwrap();
        assert!(row.contains(&format!("| {kind} |")), "{name} is a {kind}: {row}");
    }

    let histograms: BTreeSet<String> =
        types.iter().filter(|(_, kind)| kind.as_str() == "histogram").map(|(name, _)| name.clone()).collect();
    let rules = include_str!("../../../docker/prometheus/alerts.yml");
    let dashboard = include_str!("../../../docker/grafana/dashboards/paystream.json");
    let dashboard: serde_json::Value = serde_json::from_str(dashboard).unwrap();
    let expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(expressions.len() > 20, "the dashboard's queries are read ({})", expressions.len());
    for (source, named) in [
        ("alerts.yml", named_in(rules, &histograms)),
        ("the dashboard", named_in(&expressions.join("\n"), &histograms)),
    ] {
        assert!(!named.is_empty());
        let missing: Vec<&String> = named.difference(&exported).collect();
        assert!(missing.is_empty(), "{source} names metrics no service exports: {missing:?}");
    }
    pipeline.stop().await;
}
