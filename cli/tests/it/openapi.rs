//! docs/openapi.yaml against a running ingest, fuzzed by schemathesis (PyPI, installed by
//! `scripts/python-env`): every answer is one the contract lists, with its headers (a 503
//! or 429 without `Retry-After` fails) and its body schema, so no 5xx but a 503 with
//! `Retry-After`; and nothing the fuzzer sent reaches Kafka, since it cannot sign.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::harness::{now_s, read_topic, Service};
use paystream_ingest::signature::sign;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schemathesis() -> PathBuf {
    let out = Command::new(root().join("scripts/python-env")).output().expect("scripts/python-env runs");
    assert!(out.status.success(), "python env: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).with_file_name("schemathesis")
}

/// Runs schemathesis on `spec` against `url` for the paths matching `paths`; its exit status
/// and output.
fn fuzz(spec: &std::path::Path, url: &str, paths: &str, workdir: &std::path::Path) -> (bool, String) {
    let out = Command::new(schemathesis())
        .current_dir(workdir)
        .args(["run", spec.to_str().unwrap(), "--url", url, "--include-path-regex", paths])
        .args([
            "--checks",
            "status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "60", "--workers", "1", "--seed", "42", "--no-color"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The sum of a counter's samples in a Prometheus text page.
fn counter(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// schemathesis finds no answer outside docs/openapi.yaml, from the webhook endpoint (with
/// the provider generated, and once more with the configured providers' names so that the
/// fuzzer reaches the content-type, size, signature and forgery checks) and from the admin
/// endpoints; not one fuzzed webhook is produced to Kafka, while one signed webhook sent
/// afterwards is (the check could fail).
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_answer_outside_the_contract() {
    paystream_common::telemetry::init_tracing();
    let config = paystream_common::testing::isolated_config().await;
    paystream_common::kafka::ensure_topics(&config.kafka, Duration::from_secs(30)).await.unwrap();
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (addr, admin) = (format!("127.0.0.1:{}", port(0)), format!("127.0.0.1:{}", port(1)));
    let env = [("PAYSTREAM_INGEST__LISTEN", addr.clone()), ("PAYSTREAM_INGEST__ADMIN_LISTEN", admin.clone())];
    let ingest = Service::start_with("ingest", &config, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&addr).await.is_err() || TcpStream::connect(&admin).await.is_err() {
        assert!(Instant::now() < deadline, "ingest did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let workdir = std::env::temp_dir().join(format!("paystream-schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&workdir).unwrap();
    let spec = root().join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    // The same contract with the provider drawn from the configured names: the real one
    // allows any name, which the fuzzer mostly answers with 404s.
    let generated = "schema: { type: string, example: demo-standard }";
    assert!(text.contains(generated), "the provider parameter changed: update this test");
    let configured = text.replace(generated, "schema: { type: string, enum: [demo-standard, demo-stripe, demo-pix] }");
    let configured_spec = workdir.join("openapi-configured.yaml");
    std::fs::write(&configured_spec, configured).unwrap();

    let webhooks = format!("http://{addr}");
    let admin_url = format!("http://{admin}");
    for (spec, url, paths) in [
        (spec.as_path(), webhooks.as_str(), "^/webhooks/"),
        (configured_spec.as_path(), webhooks.as_str(), "^/webhooks/"),
        (spec.as_path(), admin_url.as_str(), "^/(metrics|healthz|readyz)$"),
    ] {
        let (ok, output) = tokio::task::block_in_place(|| fuzz(spec, url, paths, &workdir));
        assert!(ok, "schemathesis on {} {paths}:\n{output}", spec.display());
        assert!(output.contains("passed"), "{output}");
    }

    let http = reqwest::Client::new();
    let page = http.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    let requests = counter(&page, "paystream_ingest_requests_total", "");
    assert!(requests >= 100.0, "the fuzzer's webhooks reached ingest ({requests})");
    let unauthorized = counter(&page, "paystream_ingest_requests_total", "outcome=\"unauthorized\"");
    assert!(unauthorized > 0.0, "signatures were checked and refused ({unauthorized})");
    assert_eq!(counter(&page, "paystream_ingest_commands_produced_total", ""), 0.0, "nothing produced");
    let records = read_topic(&config, &config.kafka.inbound_topic, Duration::from_secs(5), |_| true).await;
    assert!(records.is_empty(), "nothing unsigned reached Kafka: {} records", records.len());

    // The control: a signed webhook does reach the topic through the same ingest.
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "evt_control", "type": "payment.succeeded", "created_at": "2026-11-25T10:00:00Z",
        "data": {"payment_id": "pay_control", "installment_id": uuid::Uuid::new_v4().to_string(), "amount": "1.00", "currency": "BRL"}
    }))
    .unwrap();
    let secret = config.providers["demo-standard"].secrets[0].expose().to_owned();
    let mut request = http
        .post(format!("http://{addr}/webhooks/demo-standard"))
        .header("content-type", "application/json")
        .body(body.clone());
    for (name, value) in sign::standard_webhooks(&secret, "evt_control", now_s(), &body) {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 202, "{}", answer.text().await.unwrap_or_default());
    let records = read_topic(&config, &config.kafka.inbound_topic, Duration::from_secs(30), |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1);
    ingest.terminate();
    let _ = std::fs::remove_dir_all(&workdir);
}
