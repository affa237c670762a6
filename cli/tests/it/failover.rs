//! Broker failures under load, on private Apache Kafka clusters: the single broker killed
//! with SIGKILL and restarted, and, on a 3-node KRaft cluster with replication factor 3 and
//! `min.insync.replicas` 2, the leaders of the inbound and the events topic killed in turn.
//! Throughout, webhooks keep coming; what got a 202 must be applied exactly once and its
//! event published: the test of "a 2xx means durable" in a real deployment.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::harness::{Cluster, Pipeline};

/// Posts signed payments one after another until `stop`; the payment ids that got 202, and
/// how many got 503 (a 503 may or may not have landed: the provider's retry is a no-op).
fn send_until(p: &Pipeline, stop: Arc<AtomicBool>, tag: &str) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    let (ingest, http) = (p.ingest, p.http.clone());
    let secret = p.config.providers["demo-standard"].secrets[0].expose().to_owned();
    let tag = tag.to_owned();
    let config = p.config.clone();
    tokio::spawn(async move {
        let db = crate::harness::connect_db(&config).await;
        let installments: Vec<Uuid> = db
            .query("SELECT id FROM paystream.installment ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut accepted, mut unavailable) = (Vec::new(), 0);
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let id = format!("pay_{tag}_{i}");
            let body = serde_json::to_vec(&serde_json::json!({
                "id": id, "type": "payment.succeeded", "created_at": "2026-11-25T10:00:00Z",
                "data": {"payment_id": id, "installment_id": installments[i % installments.len()].to_string(),
                         "amount": "0.01", "currency": "BRL"}
            }))
            .unwrap();
            let mut request = http
                .post(format!("http://{ingest}/webhooks/demo-standard"))
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(60))
                .body(body.clone());
            for (k, v) in
                paystream_ingest::signature::sign::standard_webhooks(&secret, &id, crate::harness::now_s(), &body)
            {
                request = request.header(k, v);
            }
            match request.send().await.map(|r| r.status().as_u16()) {
                Ok(202) => accepted.push(id),
                Ok(503) => unavailable += 1,
                other => panic!("unexpected answer {other:?}"),
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (accepted, unavailable)
    })
}

/// Every payment that got a 202 is applied exactly once and its PaymentApplied is on the
/// events topic; the books balance.
async fn assert_every_202_applied_once(p: &Pipeline, accepted: &[String]) {
    let db = crate::harness::connect_db(&p.config).await;
    let want: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let applied: HashSet<String> = loop {
        let rows = db.query("SELECT provider_payment_id FROM paystream.payment", &[]).await.unwrap();
        let applied: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        if want.iter().all(|id| applied.contains(*id)) || std::time::Instant::now() > deadline {
            break applied;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let missing: Vec<&&str> = want.iter().filter(|id| !applied.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged payments never applied: {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)]
    );
    let rows: i64 = db.query_one("SELECT count(*) FROM paystream.payment", &[]).await.unwrap().get(0);
    let sum: Decimal =
        db.query_one("SELECT coalesce(sum(amount), 0) FROM paystream.payment", &[]).await.unwrap().get(0);
    assert_eq!(Decimal::new(rows, 2), sum, "one row per payment, each once");
    let unbalanced: i64 =
        db.query_one("SELECT count(*) FROM paystream.trial_balance WHERE debits <> credits", &[]).await.unwrap().get(0);
    assert_eq!(unbalanced, 0);
    let events = p
        .read_topic(&p.config.kafka.events_topic, Duration::from_secs(120), |r| {
            let paid: HashSet<String> = r.iter().filter_map(applied_payment).collect();
            want.iter().all(|id| paid.contains(*id))
        })
        .await;
    let published: HashSet<String> = events.iter().filter_map(applied_payment).collect();
    let unpublished = want.iter().filter(|id| !published.contains(**id)).count();
    assert_eq!(unpublished, 0, "every acknowledged payment's PaymentApplied is on the topic");
}

/// The payment id of a `PaymentApplied` record.
fn applied_payment(record: &crate::harness::Record) -> Option<String> {
    if record.headers.get("event_type").map(String::as_str) != Some("PaymentApplied") {
        return None;
    }
    paystream_schemas::decode::<paystream_schemas::PaymentEvent>(&record.payload).ok().map(|e| e.payment_id)
}

/// The single broker is killed with SIGKILL in the middle of a load and restarted 5 s later:
/// ingest answers 503 while it is gone, and every webhook that got a 202, before or after,
/// is applied once and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_killed_under_load_loses_nothing_acknowledged() {
    let cluster = Cluster::start(1).await;
    let p = Pipeline::start_with(|c| {
        c.kafka.brokers = cluster.bootstrap();
        c.kafka.message_timeout_ms = 3000;
        c.ingest.produce_timeout_ms = 3000;
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_until(&p, stop.clone(), "kill");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill(1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.restart(1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (accepted, unavailable) = sender.await.unwrap();
    assert!(unavailable > 0, "ingest answered 503 while the broker was gone");
    assert!(accepted.len() > 10, "webhooks were acknowledged before and after ({})", accepted.len());
    assert_every_202_applied_once(&p, &accepted).await;
    p.stop().await;
}

/// A 3-node KRaft cluster, paystream's topics with replication factor 3 and
/// `min.insync.replicas` 2 (from config). Under load, the leader of the inbound topic's first
/// partition is killed with SIGKILL, restarted, then the leader of the events topic's: ingest,
/// processor and relay ride over the elections, and every webhook that got a 202 is applied
/// exactly once and its event published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_on_a_three_broker_cluster_loses_nothing_acknowledged() {
    let cluster = Cluster::start(3).await;
    let p = Pipeline::start_with(|c| {
        c.kafka.brokers = cluster.bootstrap();
        c.kafka.replication_factor = 3;
        c.kafka.min_insync_replicas = 2;
        c.kafka.message_timeout_ms = 30_000;
        c.ingest.produce_timeout_ms = 30_000;
    })
    .await;
    let layouts =
        paystream_common::kafka::describe_topics(&p.config.kafka, &[&p.config.kafka.inbound_topic]).await.unwrap();
    assert_eq!((layouts[0].replicas, layouts[0].min_insync_replicas), (3, Some(2)), "topics made from config");
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_until(&p, stop.clone(), "failover");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for topic in [p.config.kafka.inbound_topic.clone(), p.config.kafka.events_topic.clone()] {
        let leader = cluster.leader(&topic, 0).expect("a leader");
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_secs(8)).await;
        cluster.restart(leader).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (accepted, _) = sender.await.unwrap();
    assert!(accepted.len() > 10, "webhooks were acknowledged throughout ({})", accepted.len());
    assert_every_202_applied_once(&p, &accepted).await;
    p.stop().await;
}
