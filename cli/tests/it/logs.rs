//! The services' logs as operators' log shippers read them.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use crate::harness::Service;

/// With `PAYSTREAM_LOG_FORMAT=json` a service writes one JSON object per line on stderr, the
/// event's structured fields at the top level beside `timestamp`, `level` and `message`:
/// ingest's start-up line carries the address it listens on as its `addr` field.
#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_parse_with_their_fields() {
    let config = paystream_common::testing::isolated_config().await;
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
    let addr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let env = [
        ("PAYSTREAM_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("PAYSTREAM_INGEST__LISTEN", addr.clone()),
        ("PAYSTREAM_INGEST__ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let (ingest, stderr) = Service::start_capturing("ingest", &config, &env);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else { panic!("no 'ingest listening' line: {lines:?}") };
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(value["timestamp"].is_string() && value["level"].is_string(), "{line}");
        lines.push(line);
        if value["message"] == "ingest listening" {
            break value;
        }
    };
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["addr"], addr.as_str());
    assert_eq!(listening["topic"], config.kafka.inbound_topic.as_str());
    assert!(lines.len() > 1, "the warnings of the development configuration came first: {lines:?}");
    ingest.terminate();
}
