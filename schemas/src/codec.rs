//! Single-object encoding and the mapping between Rust values and Avro values.

use std::io::Cursor;

use apache_avro::types::Value;
use apache_avro::Schema;
use rust_decimal::Decimal;

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
}

/// Encodes `value` in single-object encoding.
pub fn encode<T: Record>(value: &T) -> Result<Vec<u8>, SchemaError> {
    let schema = T::schema();
    let body = apache_avro::to_avro_datum(&schema.schema, value.to_value()).map_err(Box::new)?;
    let mut out = Vec::with_capacity(10 + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&schema.fingerprint.to_le_bytes());
    out.extend_from_slice(&body);
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
    let writer = if fingerprint == reader.fingerprint {
        reader
    } else {
        T::history().iter().find(|s| s.fingerprint == fingerprint).ok_or(SchemaError::UnknownSchema(fingerprint))?
    };
    let mut body = Cursor::new(&bytes[10..]);
    // Resolution is needed only for an earlier writer schema.
    let resolve_to = (writer.fingerprint != reader.fingerprint).then_some(&reader.schema);
    let value = apache_avro::from_avro_datum(&writer.schema, &mut body, resolve_to).map_err(Box::new)?;
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

/// Digits of the `amount` decimals in the schemas.
const DECIMAL_PRECISION: u32 = 20;
/// Bytes that hold any value of `DECIMAL_PRECISION` digits (2^71 > 10^21).
const DECIMAL_BYTES: usize = 9;

/// Avro decimal bytes (big-endian two's complement of the unscaled value) at `scale`.
/// Fails when `amount` has more fractional digits than the scale allows.
pub(crate) fn decimal_to_avro(amount: &Decimal, scale: u32) -> Result<Value, SchemaError> {
    let mut scaled = *amount;
    scaled.rescale(scale);
    if scaled != *amount {
        return Err(SchemaError::Field { field: "amount", problem: format!("more than {scale} decimal places") });
    }
    let unscaled = scaled.mantissa();
    if unscaled.unsigned_abs() >= 10u128.pow(DECIMAL_PRECISION) {
        return Err(SchemaError::Field { field: "amount", problem: format!("more than {DECIMAL_PRECISION} digits") });
    }
    // Two's complement, sign-extended to a fixed width. The spec allows any width; a fixed
    // one that holds the full precision is what apache-avro's schema resolution insists on.
    let full = unscaled.to_be_bytes();
    Ok(Value::Decimal(apache_avro::Decimal::from(&full[16 - DECIMAL_BYTES..])))
}

pub(crate) fn decimal_from_avro(value: Value, field: &'static str, scale: u32) -> Result<Decimal, SchemaError> {
    let bytes = match value {
        Value::Decimal(d) => {
            <Vec<u8>>::try_from(&d).map_err(|e| SchemaError::Field { field, problem: e.to_string() })?
        }
        Value::Bytes(b) => b,
        other => return Err(SchemaError::Field { field, problem: format!("expected decimal, got {other:?}") }),
    };
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(SchemaError::Field { field, problem: format!("{} bytes is not a valid decimal", bytes.len()) });
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0x00 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(full);
    Decimal::try_from_i128_with_scale(unscaled, scale).map_err(|e| SchemaError::Field { field, problem: e.to_string() })
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

    /// Decimals round-trip through Avro bytes at scale 2, negative and large included.
    #[test]
    fn decimal_round_trip() {
        for s in ["0", "0.01", "-0.01", "123.45", "-128.00", "127.99", "1.28", "99999999999999999.99"] {
            let d: Decimal = s.parse().unwrap();
            let v = decimal_to_avro(&d, 2).unwrap();
            assert_eq!(decimal_from_avro(v, "amount", 2).unwrap(), d, "{s}");
        }
        assert!(decimal_to_avro(&"1.234".parse().unwrap(), 2).is_err());
    }
}
