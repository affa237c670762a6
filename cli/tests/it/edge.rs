//! The HTTP edge under hostile clients, against `paystream ingest` as its own process (its
//! memory is measured from `/proc`, and its file descriptors are its own): clients that
//! dribble their headers, thousands of idle connections, a thousand slow large uploads.
//! Throughout, signed webhooks are answered 202, every one of them reaches Kafka, and the
//! process's peak resident memory stays under `RSS_BOUND`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use paystream_common::Config;
use paystream_ingest::signature::sign;

use crate::harness::Service;

/// Ingest's peak resident memory under each attack, at most: its bodies are bounded by
/// admission (4,096 x 16 KiB for ordinary webhooks, 32 MiB for large ones), its connections by
/// `ingest.max_connections` and the header deadline; the rest is the runtime, librdkafka's
/// queues and the allocator's slack (measured under these tests: 50-60 MiB).
const RSS_BOUND: u64 = 128 * 1024 * 1024;

struct Edge {
    config: Config,
    addr: String,
    ingest: Service,
    http: reqwest::Client,
}

impl Edge {
    /// Ingest alone on a free port, on the test's own topics, with `env` on top.
    async fn start(env: &[(&str, String)]) -> Self {
        paystream_common::telemetry::init_tracing();
        let config = paystream_common::testing::isolated_config().await;
        paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, String)> =
            vec![("PAYSTREAM_INGEST__LISTEN", addr.clone()), ("PAYSTREAM_INGEST__ADMIN_LISTEN", "127.0.0.1:0".into())];
        all.extend(env.iter().cloned());
        let ingest = Service::start_with("ingest", &config, &all);
        for _ in 0..200 {
            if TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { config, addr, ingest, http: reqwest::Client::new() }
    }

    /// Sends `n` signed payment webhooks one after another; how many got 202.
    async fn signed(&self, n: usize, tag: &str) -> usize {
        let secret = self.config.providers["demo-standard"].secrets[0].expose().to_owned();
        let mut accepted = 0;
        for i in 0..n {
            let id = format!("msg_{tag}_{i}");
            let body = serde_json::to_vec(&serde_json::json!({
                "id": id, "type": "payment.succeeded", "created_at": "2026-11-25T10:00:00Z",
                "data": {"payment_id": id, "installment_id": Uuid::new_v4().to_string(), "amount": "1.00", "currency": "BRL"}
            }))
            .unwrap();
            let mut request = self
                .http
                .post(format!("http://{}/webhooks/demo-standard", self.addr))
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(30))
                .body(body.clone());
            for (k, v) in sign::standard_webhooks(&secret, &id, crate::harness::now_s(), &body) {
                request = request.header(k, v);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status().as_u16(),
                202,
                "a signed webhook under attack: {}",
                response.text().await.unwrap()
            );
            accepted += 1;
        }
        accepted
    }

    /// Every accepted webhook is on the inbound topic: a 202 meant durable.
    async fn assert_on_kafka(&self, accepted: usize) {
        let reader = crate::harness::Pipeline::reader(self.config.clone());
        let records =
            reader.read_topic(&self.config.kafka.inbound_topic, Duration::from_secs(30), |r| r.len() >= accepted).await;
        assert_eq!(records.len(), accepted, "every 202 on the topic, nothing else");
    }

    fn assert_rss_bounded(&self, what: &str) {
        let (now, peak) = self.ingest.rss();
        assert!(peak > 0, "/proc reads the child");
        assert!(peak < RSS_BOUND, "{what}: ingest's peak RSS {} MiB (now {} MiB)", peak >> 20, now >> 20);
        eprintln!("{what}: ingest's peak RSS {} MiB", peak >> 20);
    }
}

/// Waits until the server closes `stream` (EOF or reset), sending `dribble` every 200 ms
/// meanwhile; true once closed, false if still open after `limit`.
async fn closed_by_server(mut stream: TcpStream, dribble: &'static [u8], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while tokio::time::Instant::now() < deadline {
        if !dribble.is_empty() && stream.write_all(dribble).await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // an error answer (408); the close follows
            Err(_) => {}
        }
    }
    false
}

/// Slowloris: 500 clients send a request line and then one header line every 200 ms, never
/// finishing the head. Each is disconnected at the header deadline (1 s here), and signed
/// webhooks are answered 202 all along. (Before, axum's server had no timer: they stayed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_dribble_headers_are_disconnected() {
    let edge = Edge::start(&[("PAYSTREAM_INGEST__HEADER_READ_TIMEOUT_MS", "1000".into())]).await;
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut stream = TcpStream::connect(&edge.addr).await.unwrap();
        stream.write_all(b"POST /webhooks/demo-standard HTTP/1.1\r\nHost: ingest\r\n").await.unwrap();
        slow.push(tokio::spawn(closed_by_server(stream, b"X-Slow: 1\r\n", Duration::from_secs(30))));
    }
    let accepted = edge.signed(50, "slowloris").await;
    let mut closed = 0;
    for task in slow {
        closed += usize::from(task.await.unwrap());
    }
    assert_eq!(closed, 500, "every dribbling client disconnected");
    edge.assert_on_kafka(accepted).await;
    edge.assert_rss_bounded("slowloris");
}

/// 10,000 connections opened and left idle: signed webhooks are still answered 202 while
/// they are open, the process's memory stays bounded, and the idle connections are closed at
/// the header deadline (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_idle_connections_neither_block_nor_exhaust_ingest() {
    let edge = Edge::start(&[("PAYSTREAM_INGEST__HEADER_READ_TIMEOUT_MS", "2000".into())]).await;
    let mut idle = Vec::with_capacity(10_000);
    while idle.len() < 10_000 {
        let batch: Vec<_> = (0..500).map(|_| TcpStream::connect(edge.addr.clone())).collect();
        for stream in futures::future::join_all(batch).await {
            idle.push(stream.unwrap());
        }
    }
    let accepted = edge.signed(100, "idle").await;
    edge.assert_rss_bounded("10,000 idle connections");
    let closes: Vec<_> =
        idle.into_iter().map(|s| tokio::spawn(closed_by_server(s, b"", Duration::from_secs(60)))).collect();
    let mut closed = 0;
    for task in closes {
        closed += usize::from(task.await.unwrap());
    }
    assert_eq!(closed, 10_000, "idle connections closed by the server");
    edge.assert_on_kafka(accepted).await;
}

/// 1,000 clients each announce a 256 KiB body and send it at 2 KiB/s: at most the large-body
/// budget's worth (32 MiB, 128 of them) is admitted and read, and those are cut at the body
/// deadline (3 s here, 408); the rest are answered 503 with `Retry-After` at once, their
/// bodies unread. Signed webhooks are answered 202 all along and memory stays bounded.
/// (Before, every body was buffered before any limit applied.) The clients send
/// `Expect: 100-continue`, so that an answer given before the body is read reaches them
/// instead of being lost to the reset that closing a connection with unread data sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_slow_large_uploads_are_shed_not_buffered() {
    let edge = Edge::start(&[("PAYSTREAM_INGEST__BODY_READ_TIMEOUT_MS", "3000".into())]).await;
    let head = format!(
        "POST /webhooks/demo-standard HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        256 * 1024
    );
    let uploads: Vec<_> = (0..1000)
        .map(|_| {
            let (addr, head) = (edge.addr.clone(), head.clone());
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.unwrap();
                stream.write_all(head.as_bytes()).await.unwrap();
                let chunk = vec![b' '; 1024];
                let mut answer = Vec::new();
                let mut buf = [0u8; 512];
                // The interim answer (100, admitted) or the final one (503, shed).
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    answer.extend_from_slice(&buf[..n]);
                    if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                if !answer.starts_with(b"HTTP/1.1 100") {
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    return text.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok());
                }
                answer.clear();
                for _ in 0..512 {
                    if stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => {
                            answer.extend_from_slice(&buf[..n]);
                            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
                let text = String::from_utf8_lossy(&answer).into_owned();
                text.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = edge.signed(100, "uploads").await;
    edge.assert_rss_bounded("1,000 slow 256 KiB uploads");
    let mut answers = std::collections::BTreeMap::new();
    for upload in uploads {
        *answers.entry(upload.await.unwrap()).or_insert(0) += 1;
    }
    let shed = answers.get(&Some(503)).copied().unwrap_or(0);
    let cut = answers.get(&Some(408)).copied().unwrap_or(0);
    assert_eq!(shed + cut, 1000, "every upload answered 503 (not admitted) or 408 (too slow): {answers:?}");
    assert!(cut <= 128 && shed >= 872, "at most the budget's worth admitted: {answers:?}");
    edge.assert_on_kafka(accepted).await;
}
