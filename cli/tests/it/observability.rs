//! Alerts, dashboard and metric catalogue against running services: the rules of
//! docker/prometheus/alerts.yml evaluated by a real Prometheus scraping the services.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::Pipeline;
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
