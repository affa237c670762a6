//! Cross-language checks with the real PyPI clients (`scripts/python-env` installs them once):
//! signatures made by the `standardwebhooks` library are accepted by ingest, signatures made by
//! paystream verify with `standardwebhooks` and `stripe`, and a Python consumer decodes the
//! events with `fastavro` and nothing but the `.avsc` files.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::{now_s, Pipeline};
use paystream_ingest::signature::sign;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> String {
    let out = Command::new(root().join("scripts/python-env")).output().expect("scripts/python-env runs");
    assert!(out.status.success(), "python env: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn crosscheck(args: &[&str]) -> std::process::Output {
    Command::new(python()).arg(root().join("tests/python/crosscheck.py")).args(args).output().unwrap()
}

fn body_file(body: &[u8]) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(body)
}

mod tempfile_path {
    /// A file removed on drop, so that no crate is needed for one temporary file.
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new(contents: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!("paystream-{}", uuid::Uuid::new_v4()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A webhook signed by the `standardwebhooks` library is accepted; paystream's own signatures
/// verify with `standardwebhooks` and with `stripe.Webhook.construct_event`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signatures_agree_with_the_reference_libraries() {
    let p = Pipeline::start().await;
    let (installment, _) = p.installments().await[0];
    let (_, body) = p.payment("msg_py_1", "pay_py_1", installment, "3.00");
    let file = body_file(&body);
    let secret = p.config.providers["demo-standard"].secrets[0].expose().to_owned();
    let ts = now_s().to_string();
    let out = crosscheck(&["sign-standard", &secret, "msg_py_1", &ts, file.as_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signature = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let headers = vec![
        ("webhook-id", "msg_py_1".to_owned()),
        ("webhook-timestamp", ts.clone()),
        ("webhook-signature", signature),
    ];
    let (status, text) = p.post("demo-standard", &headers, &body).await;
    assert_eq!(status, 202, "{text}");

    let ours = sign::standard_webhooks(&secret, "msg_py_2", now_s(), &body);
    let out = crosscheck(&["verify-standard", &secret, "msg_py_2", &ours[1].1, &ours[2].1, file.as_str()]);
    assert!(out.status.success(), "standardwebhooks refused ours: {}", String::from_utf8_lossy(&out.stderr));
    let tampered = crosscheck(&[
        "verify-standard",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_py_2",
        &ours[1].1,
        &ours[2].1,
        file.as_str(),
    ]);
    assert!(!tampered.status.success(), "a wrong secret must fail in Python too");

    let stripe_secret = p.config.providers["demo-stripe"].secrets[0].expose().to_owned();
    let (_, header) = sign::stripe(&stripe_secret, now_s(), &body);
    let out = crosscheck(&["verify-stripe", &stripe_secret, &header, file.as_str()]);
    assert!(out.status.success(), "stripe refused ours: {}", String::from_utf8_lossy(&out.stderr));
    p.stop().await;
}

/// A Python consumer (`confluent-kafka` + `fastavro`) decodes the events with only the
/// `.avsc` files: the single-object fingerprint it computes names the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_consumer_decodes_events_with_only_the_avsc() {
    let p = Pipeline::start().await;
    let (installment, due) = p.installments().await[1];
    let (headers, body) = p.payment("msg_py_3", "pay_py_3", installment, &due.to_string());
    assert_eq!(p.post("demo-standard", &headers, &body).await.0, 202);
    // PaymentApplied and InstallmentPaid.
    let events = p.read_topic(&p.config.kafka.events_topic, Duration::from_secs(30), |r| r.len() >= 2).await;
    assert_eq!(events.len(), 2);
    let avsc = root().join("schemas/avro");
    let out = crosscheck(&[
        "consume",
        &p.config.kafka.brokers,
        &p.config.kafka.events_topic,
        avsc.to_str().unwrap(),
        "2",
        "30",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let applied = lines.iter().find(|l| l["record"]["event_type"] == "PaymentApplied").expect("PaymentApplied");
    assert_eq!(applied["key"], installment.to_string());
    assert_eq!(applied["record"]["payment_id"], "pay_py_3");
    assert_eq!(applied["record"]["amount"], due.to_string());
    assert_eq!(applied["record"]["currency"], "BRL");
    assert_eq!(applied["headers"]["event_id"], applied["record"]["event_id"]);
    assert!(lines.iter().any(|l| l["record"]["event_type"] == "InstallmentPaid"));
    p.stop().await;
}
