//! Every current schema reads (and is read by) every earlier version kept in
//! `schemas/avro/history/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::Schema;
use paystream_schemas::parsing_canonical_form;

const RECORDS: [&str; 4] = ["PaymentCommand", "PaymentEvent", "DeadLetter", "UnprocessableWebhook"];

fn avro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")
}

/// The versions of `record`, oldest first.
fn versions(record: &str) -> Vec<(u32, String)> {
    let dir = avro_dir().join("history").join(record);
    let mut out: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let n: u32 = stem
                .strip_prefix('v')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{}: history files are named v<N>.avsc", p.display()));
            (n, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    assert!(!out.is_empty(), "{record}: no history kept");
    out
}

#[test]
fn current_schema_is_the_newest_version_kept() {
    for record in RECORDS {
        let current = std::fs::read_to_string(avro_dir().join(format!("{record}.avsc"))).unwrap();
        let (n, newest) = versions(record).pop().unwrap();
        assert_eq!(
            parsing_canonical_form(&current).unwrap(),
            parsing_canonical_form(&newest).unwrap(),
            "{record}.avsc differs from history/{record}/v{n}.avsc: add v{} for the change",
            n + 1
        );
    }
}

/// A datum of `schema` with every field set (the non-null branch of unions), so that
/// resolution has to convert every field.
fn sample(schema: &Schema) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(true),
        Schema::Int => Value::Int(7),
        Schema::Long => Value::Long(7),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(1.5),
        Schema::String => Value::String("x".into()),
        Schema::Bytes => Value::Bytes(vec![1, 2]),
        Schema::Uuid => Value::Uuid(Default::default()),
        Schema::TimestampMillis => Value::TimestampMillis(1_700_000_000_000),
        // Sign-extended to the bytes the precision needs, as the codec writes decimals.
        Schema::Decimal(d) => {
            let len = ((d.precision as f64 * 10f64.log2() + 1.0) / 8.0).ceil() as usize;
            let mut bytes = vec![0u8; len];
            bytes[len - 1] = 1;
            Value::Decimal(bytes.into())
        }
        Schema::Union(u) => {
            let (i, branch) =
                u.variants().iter().enumerate().find(|(_, v)| **v != Schema::Null).unwrap_or((0, &Schema::Null));
            Value::Union(i as u32, Box::new(sample(branch)))
        }
        Schema::Record(r) => Value::Record(r.fields.iter().map(|f| (f.name.clone(), sample(&f.schema))).collect()),
        Schema::Enum(e) => Value::Enum(0, e.symbols[0].clone()),
        Schema::Array(a) => Value::Array(vec![sample(&a.items)]),
        Schema::Map(m) => Value::Map([("k".to_owned(), sample(&m.types))].into_iter().collect()),
        other => panic!("extend the sample generator for {other:?}"),
    }
}

/// Writes a full datum with `writer` and reads it with `reader` through Avro resolution.
fn reads(writer: &Schema, reader: &Schema) -> Result<(), String> {
    let bytes = apache_avro::to_avro_datum(writer, sample(writer)).map_err(|e| e.to_string())?;
    let mut cursor = std::io::Cursor::new(bytes.as_slice());
    apache_avro::from_avro_datum(writer, &mut cursor, Some(reader)).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn current_schema_reads_and_is_read_by_every_earlier_version() {
    for record in RECORDS {
        let current =
            Schema::parse_str(&std::fs::read_to_string(avro_dir().join(format!("{record}.avsc"))).unwrap()).unwrap();
        for (n, text) in versions(record) {
            let earlier = Schema::parse_str(&text).unwrap();
            reads(&earlier, &current)
                .unwrap_or_else(|e| panic!("{record}: the current reader cannot read v{n} data: {e}"));
            reads(&current, &earlier)
                .unwrap_or_else(|e| panic!("{record}: a v{n} reader cannot read current data: {e}"));
        }
    }
}

/// The check above is not vacuous: a field added without a default breaks backward reading;
/// with a default both directions read.
#[test]
fn the_check_rejects_incompatible_changes() {
    let v1 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    let added = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;
    let defaulted = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;
    let (v1, added, defaulted) =
        (Schema::parse_str(v1).unwrap(), Schema::parse_str(added).unwrap(), Schema::parse_str(defaulted).unwrap());
    assert!(reads(&v1, &added).is_err(), "new required field: old data unreadable");
    assert!(SchemaCompatibility::can_read(&v1, &added).is_err());
    assert!(reads(&v1, &defaulted).is_ok());
    assert!(reads(&defaulted, &v1).is_ok());
}
