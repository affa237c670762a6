//! Single-object encoding and the mapping between Rust values and Avro values.

use std::io::Cursor;

use apache_avro::types::Value;
use apache_avro::Schema;
use rust_decimal::Decimal;

use crate::binary::{self, Reader};

/// The two marker bytes that open every single-object encoded value.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// A wire value could not be encoded or decoded. Decoding errors mean the message is
/// poison (dead-letter it); encoding errors mean the code is wrong (stop).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The value does not start with the single-object marker.
    #[error("not an Avro single-object value (bad or missing 0xC3 0x01 marker)")]
    NotSingleObject,
    /// The fingerprint names no schema this reader knows.
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownSchema(u64),
    /// Avro decoding or resolution failed.
    #[error("Avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
    /// The decoded record lacks a field or has one of the wrong type.
    #[error("field {field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// A parsed schema with its fingerprint.
#[derive(Debug)]
pub struct WireSchema {
    /// The parsed schema.
    pub schema: Schema,
    /// CRC-64-AVRO of the Parsing Canonical Form.
    pub fingerprint: u64,
}

impl WireSchema {
    /// Parses an `.avsc` text. Panics on an invalid schema: schemas are compiled in and tested.
    pub fn parse(avsc: &str) -> Self {
        #[allow(clippy::expect_used)]
        let schema = Schema::parse_str(avsc).expect("embedded .avsc files are valid (tested)");
        let canonical =
            crate::canonical::parsing_canonical_form(avsc).expect("embedded .avsc files are valid (tested)");
        let fingerprint = fingerprint64(canonical.as_bytes());
        Self { schema, fingerprint }
    }
}

/// A Rust type that is one Avro record of the contract.
pub trait Record: Sized {
    /// The current schema (the reader schema when decoding).
    fn schema() -> &'static WireSchema;
    /// Earlier writer schemas still readable, from `schemas/avro/history/`.
    fn history() -> &'static [WireSchema] {
        &[]
    }
    /// The Avro value of `self`.
    fn to_value(&self) -> Value;
    /// The Rust value of a record resolved to the current schema.
    fn from_value(value: Value) -> Result<Self, SchemaError>;
    /// Appends the Avro binary body of `self` in the current schema; the same bytes as
    /// `to_avro_datum(schema, to_value())`, without the generic value tree.
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), SchemaError>;
    /// Reads a body written with the current schema.
    fn read_body(body: &mut Reader<'_>) -> Result<Self, SchemaError>;
}

/// Encodes `value` in single-object encoding.
pub fn encode<T: Record>(value: &T) -> Result<Vec<u8>, SchemaError> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&T::schema().fingerprint.to_le_bytes());
    value.write_body(&mut out)?;
    Ok(out)
}

/// Decodes a single-object encoded value written with the current or an earlier schema.
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, SchemaError> {
    if bytes.len() < 10 || bytes[..2] != MAGIC {
        return Err(SchemaError::NotSingleObject);
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..10]);
    let fingerprint = u64::from_le_bytes(fp);
    let reader = T::schema();
    if fingerprint == reader.fingerprint {
        let mut body = Reader::new(&bytes[10..]);
        let value = T::read_body(&mut body)?;
        body.finish()?;
        return Ok(value);
    }
    // An earlier writer schema: apache-avro resolves it to the current one.
    let writer =
        T::history().iter().find(|s| s.fingerprint == fingerprint).ok_or(SchemaError::UnknownSchema(fingerprint))?;
    let mut body = Cursor::new(&bytes[10..]);
    let value = apache_avro::from_avro_datum(&writer.schema, &mut body, Some(&reader.schema)).map_err(Box::new)?;
    if body.position() as usize != bytes.len() - 10 {
        return Err(SchemaError::Field { field: "<record>", problem: "trailing bytes after the record".into() });
    }
    T::from_value(value)
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
pub fn fingerprint64(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            }
            *slot = fp;
        }
        table
    });
    let mut fp = EMPTY;
    for byte in data {
        fp = (fp >> 8) ^ table[((fp ^ u64::from(*byte)) & 0xff) as usize];
    }
    fp
}

/// Avro decimal value of `amount` at `scale` (see [`binary::decimal_bytes`]).
pub(crate) fn decimal_to_avro(amount: &Decimal, scale: u32) -> Result<Value, SchemaError> {
    Ok(Value::Decimal(apache_avro::Decimal::from(&binary::decimal_bytes(amount, scale)?[..])))
}

pub(crate) fn decimal_from_avro(value: Value, field: &'static str, scale: u32) -> Result<Decimal, SchemaError> {
    let bytes = match value {
        Value::Decimal(d) => {
            <Vec<u8>>::try_from(&d).map_err(|e| SchemaError::Field { field, problem: e.to_string() })?
        }
        Value::Bytes(b) => b,
        other => return Err(SchemaError::Field { field, problem: format!("expected decimal, got {other:?}") }),
    };
    binary::decimal_from_bytes(&bytes, field, scale)
}

/// Reads the named fields of a record value, in any order.
pub(crate) struct Fields(Vec<(String, Value)>);

impl Fields {
    pub(crate) fn new(value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Record(fields) => Ok(Self(fields)),
            other => {
                Err(SchemaError::Field { field: "<record>", problem: format!("expected a record, got {other:?}") })
            }
        }
    }

    fn take(&mut self, field: &'static str) -> Result<Value, SchemaError> {
        let index = self
            .0
            .iter()
            .position(|(name, _)| name == field)
            .ok_or(SchemaError::Field { field, problem: "missing".into() })?;
        Ok(std::mem::replace(&mut self.0[index].1, Value::Null))
    }

    /// The value of `field` as it is, for nested records.
    pub(crate) fn take_value(&mut self, field: &'static str) -> Result<Value, SchemaError> {
        self.take(field)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, SchemaError> {
        match self.take(field)? {
            Value::String(s) => Ok(s),
            other => Err(SchemaError::Field { field, problem: format!("expected string, got {other:?}") }),
        }
    }

    pub(crate) fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, SchemaError> {
        match self.take(field)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s)),
                other => Err(SchemaError::Field { field, problem: format!("expected string, got {other:?}") }),
            },
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(SchemaError::Field { field, problem: format!("expected optional string, got {other:?}") }),
        }
    }

    pub(crate) fn uuid(&mut self, field: &'static str) -> Result<uuid::Uuid, SchemaError> {
        let s = self.string(field)?;
        uuid::Uuid::parse_str(&s).map_err(|e| SchemaError::Field { field, problem: e.to_string() })
    }

    pub(crate) fn opt_uuid(&mut self, field: &'static str) -> Result<Option<uuid::Uuid>, SchemaError> {
        match self.opt_string(field)? {
            None => Ok(None),
            Some(s) => {
                uuid::Uuid::parse_str(&s).map(Some).map_err(|e| SchemaError::Field { field, problem: e.to_string() })
            }
        }
    }

    pub(crate) fn millis(&mut self, field: &'static str) -> Result<i64, SchemaError> {
        match self.take(field)? {
            Value::TimestampMillis(ms) | Value::Long(ms) => Ok(ms),
            other => Err(SchemaError::Field { field, problem: format!("expected timestamp-millis, got {other:?}") }),
        }
    }

    pub(crate) fn long(&mut self, field: &'static str) -> Result<i64, SchemaError> {
        match self.take(field)? {
            Value::Long(v) => Ok(v),
            other => Err(SchemaError::Field { field, problem: format!("expected long, got {other:?}") }),
        }
    }

    pub(crate) fn int(&mut self, field: &'static str) -> Result<i32, SchemaError> {
        match self.take(field)? {
            Value::Int(v) => Ok(v),
            other => Err(SchemaError::Field { field, problem: format!("expected int, got {other:?}") }),
        }
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, SchemaError> {
        match self.take(field)? {
            Value::Bytes(b) => Ok(b),
            other => Err(SchemaError::Field { field, problem: format!("expected bytes, got {other:?}") }),
        }
    }

    pub(crate) fn decimal(&mut self, field: &'static str, scale: u32) -> Result<Decimal, SchemaError> {
        decimal_from_avro(self.take(field)?, field, scale)
    }
}

pub(crate) fn opt_string(value: Option<&str>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_owned()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-64-AVRO matches the values given by the Avro specification's reference
    /// implementation for primitive schemas.
    #[test]
    fn fingerprint_matches_reference_values() {
        // From the Avro test suite (share/test/data/schema-tests.txt): "null" and "int".
        assert_eq!(fingerprint64(br#""null""#) as i64, 7195948357588979594);
        assert_eq!(fingerprint64(br#""int""#) as i64, 8247732601305521295);
    }
}
