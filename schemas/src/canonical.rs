//! Parsing Canonical Form of an Avro schema, as the Avro specification defines it: only
//! `name`, `type`, `fields`, `symbols`, `items`, `values`, `size`, in that order; full names;
//! primitives as bare strings; named types inlined at their first use, referenced by full
//! name after. Written here because apache-avro's `canonical_form` keeps logical-type
//! attributes (`precision`, `scale`) and wraps primitives, which gives fingerprints that Java
//! and fastavro readers do not recognise.

use std::collections::HashSet;

use serde_json::Value;

const PRIMITIVES: &[&str] = &["null", "boolean", "int", "long", "float", "double", "bytes", "string"];
const ORDER: &[&str] = &["name", "type", "fields", "symbols", "items", "values", "size"];

/// The canonical form of the schema in `avsc`, or why the text is not a schema.
pub fn parsing_canonical_form(avsc: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(avsc).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut defined = HashSet::new();
    write(&value, "", &mut defined, &mut out)?;
    Ok(out)
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

fn write(schema: &Value, namespace: &str, defined: &mut HashSet<String>, out: &mut String) -> Result<(), String> {
    match schema {
        Value::String(name) => {
            let name = if PRIMITIVES.contains(&name.as_str()) { name.clone() } else { full_name(name, namespace) };
            out.push_str(&Value::String(name).to_string());
        }
        Value::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(branch, namespace, defined, out)?;
            }
            out.push(']');
        }
        Value::Object(object) => {
            let kind = object.get("type").ok_or("schema object without type")?;
            let kind_name = kind.as_str().unwrap_or_default();
            // A primitive with attributes (a logical type) is the bare primitive.
            if PRIMITIVES.contains(&kind_name) {
                return write(kind, namespace, defined, out);
            }
            if !kind.is_string() {
                return write(kind, namespace, defined, out);
            }
            let named = matches!(kind_name, "record" | "error" | "enum" | "fixed");
            let mut inner_namespace = namespace.to_owned();
            let mut name = None;
            if named {
                let own = object.get("name").and_then(Value::as_str).ok_or("named type without name")?;
                let ns = object.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
                let full = full_name(own, ns);
                if !defined.insert(full.clone()) {
                    out.push_str(&Value::String(full).to_string());
                    return Ok(());
                }
                inner_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_owned()).unwrap_or_default();
                name = Some(full);
            }
            out.push('{');
            let mut first = true;
            for key in ORDER {
                let piece = match *key {
                    "name" => match &name {
                        Some(full) => Value::String(full.clone()).to_string(),
                        None => continue,
                    },
                    "type" => {
                        Value::String(if kind_name == "error" { "record".into() } else { kind_name.into() }).to_string()
                    }
                    "fields" => {
                        let Some(fields) = object.get("fields").and_then(Value::as_array) else { continue };
                        let mut text = String::from("[");
                        for (i, field) in fields.iter().enumerate() {
                            if i > 0 {
                                text.push(',');
                            }
                            let field_name = field.get("name").and_then(Value::as_str).ok_or("field without name")?;
                            text.push_str(&format!("{{\"name\":{},\"type\":", Value::String(field_name.into())));
                            write(
                                field.get("type").ok_or("field without type")?,
                                &inner_namespace,
                                defined,
                                &mut text,
                            )?;
                            text.push('}');
                        }
                        text.push(']');
                        text
                    }
                    "symbols" => match object.get("symbols") {
                        Some(symbols) => symbols.to_string(),
                        None => continue,
                    },
                    "items" | "values" => match object.get(*key) {
                        Some(inner) => {
                            let mut text = String::new();
                            write(inner, &inner_namespace, defined, &mut text)?;
                            text
                        }
                        None => continue,
                    },
                    "size" => match object.get("size").and_then(Value::as_u64) {
                        Some(size) => size.to_string(),
                        None => continue,
                    },
                    _ => continue,
                };
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&format!("\"{key}\":{piece}"));
            }
            out.push('}');
        }
        other => return Err(format!("not a schema: {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_le(fp: u64) -> String {
        fp.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Cases from the Avro specification's canonical-form rules.
    #[test]
    fn specification_rules() {
        assert_eq!(parsing_canonical_form(r#"{"type":"int"}"#).unwrap(), r#""int""#);
        assert_eq!(parsing_canonical_form(r#"{"type":"long","logicalType":"timestamp-millis"}"#).unwrap(), r#""long""#);
        assert_eq!(
            parsing_canonical_form(r#"{"type":"fixed","name":"F","namespace":"a.b","size":16,"doc":"x"}"#).unwrap(),
            r#"{"name":"a.b.F","type":"fixed","size":16}"#
        );
        assert_eq!(
            parsing_canonical_form(r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#).unwrap(),
            r#"{"name":"E","type":"enum","symbols":["A","B"]}"#
        );
        assert_eq!(
            parsing_canonical_form(r#"{"type":"map","values":{"type":"array","items":"string"}}"#).unwrap(),
            r#"{"type":"map","values":{"type":"array","items":"string"}}"#
        );
        // A named type is inlined once, then referenced by full name.
        let twice = r#"{"type":"record","name":"R","namespace":"n","fields":[
            {"name":"a","type":{"type":"fixed","name":"F","size":2}},{"name":"b","type":"F","default":"x"}]}"#;
        assert_eq!(
            parsing_canonical_form(twice).unwrap(),
            r#"{"name":"n.R","type":"record","fields":[{"name":"a","type":{"name":"n.F","type":"fixed","size":2}},{"name":"b","type":"n.F"}]}"#
        );
    }

    /// The canonical form and fingerprint of PaymentEvent v1 are the ones fastavro computes
    /// (`fastavro.schema.to_parsing_canonical_form`, `fingerprint(..., "CRC-64-AVRO")`, which
    /// prints the 8 bytes in wire order: `20c984ecaa66c7d0`).
    #[test]
    fn payment_event_matches_fastavro() {
        let pcf = parsing_canonical_form(include_str!("../avro/history/PaymentEvent/v1.avsc")).unwrap();
        assert_eq!(
            pcf,
            r#"{"name":"io.paystream.payments.v1.PaymentEvent","type":"record","fields":[{"name":"event_id","type":"string"},{"name":"event_type","type":"string"},{"name":"occurred_at","type":"long"},{"name":"aggregate_id","type":"string"},{"name":"provider","type":"string"},{"name":"payment_id","type":"string"},{"name":"installment_id","type":["null","string"]},{"name":"contract_id","type":["null","string"]},{"name":"amount","type":"bytes"},{"name":"currency","type":"string"},{"name":"reason","type":["null","string"]}]}"#
        );
        assert_eq!(hex_le(crate::fingerprint64(pcf.as_bytes())), "20c984ecaa66c7d0");
        // v2 (the current schema), with its nested record: fastavro prints `6d28e2682af74042`.
        let pcf = parsing_canonical_form(include_str!("../avro/PaymentEvent.avsc")).unwrap();
        assert!(pcf.ends_with(
            r#"{"name":"allocation","type":["null",{"name":"io.paystream.payments.v1.Allocation","type":"record","fields":[{"name":"late_fee","type":"bytes"},{"name":"interest","type":"bytes"},{"name":"principal","type":"bytes"},{"name":"credit","type":"bytes"}]}]},{"name":"business_date","type":["null","string"]}]}"#
        ));
        assert_eq!(hex_le(crate::fingerprint64(pcf.as_bytes())), "6d28e2682af74042");
    }
}
