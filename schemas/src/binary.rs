//! Avro binary encoding of the contract's records, written and read field by field.
//!
//! The records are few and fixed, and every webhook, command and event passes through here:
//! going through apache-avro's generic `Value` tree (a `String` per field name, a `Box` per
//! union, schema validation per datum) cost more than the rest of the edge's work. The
//! generic path remains for earlier writer schemas, which need resolution, and a test holds
//! this module byte for byte to apache-avro's output for the current schemas.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::codec::SchemaError;

/// Appends a zig-zag varint `long` (also used for `int`).
pub(crate) fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends `bytes` (length, then the bytes); `string` is the same on the wire.
pub(crate) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Appends a UUID as its lowercase hyphenated string, without allocating.
pub(crate) fn uuid(out: &mut Vec<u8>, id: &Uuid) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    bytes(out, id.hyphenated().encode_lower(&mut buf).as_bytes());
}

/// Appends a `["null", "string"]` union holding a UUID or null.
pub(crate) fn opt_uuid(out: &mut Vec<u8>, id: Option<&Uuid>) {
    match id {
        None => long(out, 0),
        Some(id) => {
            long(out, 1);
            uuid(out, id);
        }
    }
}

/// Appends a `["null", "string"]` union.
pub(crate) fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => long(out, 0),
        Some(s) => {
            long(out, 1);
            bytes(out, s.as_bytes());
        }
    }
}

/// Digits of the `amount` decimals in the schemas.
const DECIMAL_PRECISION: u32 = 20;
/// Bytes that hold any value of `DECIMAL_PRECISION` digits (2^71 > 10^21).
const DECIMAL_BYTES: usize = 9;

/// The unscaled big-endian two's complement bytes of `amount` at `scale`, sign-extended to
/// a fixed width. The spec allows any width; a fixed one that holds the full precision is
/// what apache-avro's schema resolution insists on. Fails when `amount` has more fractional
/// digits than the scale allows, or more digits than the precision.
pub(crate) fn decimal_bytes(amount: &Decimal, scale: u32) -> Result<[u8; DECIMAL_BYTES], SchemaError> {
    let mut scaled = *amount;
    scaled.rescale(scale);
    if scaled != *amount {
        return Err(SchemaError::Field { field: "amount", problem: format!("more than {scale} decimal places") });
    }
    let unscaled = scaled.mantissa();
    if unscaled.unsigned_abs() >= 10u128.pow(DECIMAL_PRECISION) {
        return Err(SchemaError::Field { field: "amount", problem: format!("more than {DECIMAL_PRECISION} digits") });
    }
    let full = unscaled.to_be_bytes();
    let mut out = [0u8; DECIMAL_BYTES];
    out.copy_from_slice(&full[16 - DECIMAL_BYTES..]);
    Ok(out)
}

/// The decimal whose unscaled two's complement bytes are `b`, at `scale`.
pub(crate) fn decimal_from_bytes(b: &[u8], field: &'static str, scale: u32) -> Result<Decimal, SchemaError> {
    if b.is_empty() || b.len() > 16 {
        return Err(SchemaError::Field { field, problem: format!("{} bytes is not a valid decimal", b.len()) });
    }
    let fill = if b[0] & 0x80 != 0 { 0xFF } else { 0x00 };
    let mut full = [fill; 16];
    full[16 - b.len()..].copy_from_slice(b);
    let unscaled = i128::from_be_bytes(full);
    Decimal::try_from_i128_with_scale(unscaled, scale).map_err(|e| SchemaError::Field { field, problem: e.to_string() })
}

/// Reads an Avro body front to back; every read checks bounds and says which field failed.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    fn truncated(field: &'static str) -> SchemaError {
        SchemaError::Field { field, problem: "truncated".into() }
    }

    pub(crate) fn long(&mut self, field: &'static str) -> Result<i64, SchemaError> {
        let mut z: u64 = 0;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            z |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 9 && byte > 1 {
                    break; // more than 64 bits
                }
                self.rest = &self.rest[i + 1..];
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        if self.rest.len() < 10 {
            Err(Self::truncated(field))
        } else {
            Err(SchemaError::Field { field, problem: "varint longer than 64 bits".into() })
        }
    }

    pub(crate) fn int(&mut self, field: &'static str) -> Result<i32, SchemaError> {
        let v = self.long(field)?;
        i32::try_from(v).map_err(|_| SchemaError::Field { field, problem: format!("{v} does not fit an int") })
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], SchemaError> {
        let len = self.long(field)?;
        let len = usize::try_from(len)
            .map_err(|_| SchemaError::Field { field, problem: format!("negative length {len}") })?;
        if len > self.rest.len() {
            return Err(Self::truncated(field));
        }
        let (b, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(b)
    }

    pub(crate) fn str(&mut self, field: &'static str) -> Result<&'a str, SchemaError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map_err(|e| SchemaError::Field { field, problem: e.to_string() })
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, SchemaError> {
        self.str(field).map(str::to_owned)
    }

    /// The branch of a `["null", X]` union: false for null.
    fn present(&mut self, field: &'static str) -> Result<bool, SchemaError> {
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(SchemaError::Field { field, problem: format!("union branch {other} does not exist") }),
        }
    }

    pub(crate) fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, SchemaError> {
        if self.present(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn uuid(&mut self, field: &'static str) -> Result<Uuid, SchemaError> {
        let s = self.str(field)?;
        Uuid::parse_str(s).map_err(|e| SchemaError::Field { field, problem: e.to_string() })
    }

    pub(crate) fn opt_uuid(&mut self, field: &'static str) -> Result<Option<Uuid>, SchemaError> {
        if self.present(field)? {
            self.uuid(field).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn decimal(&mut self, field: &'static str, scale: u32) -> Result<Decimal, SchemaError> {
        let b = self.bytes(field)?;
        decimal_from_bytes(b, field, scale)
    }

    /// Fails unless the whole body was read.
    pub(crate) fn finish(self) -> Result<(), SchemaError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(SchemaError::Field { field: "<record>", problem: "trailing bytes after the record".into() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Varints round-trip at the edges, and malformed ones are errors.
    #[test]
    fn long_round_trip_and_limits() {
        for v in [0, 1, -1, 63, -64, 64, i64::from(i32::MAX), i64::from(i32::MIN), i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            long(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.long("v").unwrap(), v);
            r.finish().unwrap();
        }
        assert!(Reader::new(&[0x80]).long("v").is_err());
        assert!(Reader::new(&[0xFF; 11]).long("v").is_err());
        assert!(Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]).long("v").is_err());
        let mut out = Vec::new();
        long(&mut out, i64::from(i32::MAX) + 1);
        assert!(Reader::new(&out).int("v").is_err());
        let mut out = Vec::new();
        long(&mut out, -1);
        assert!(Reader::new(&out).bytes("v").is_err(), "negative length");
    }

    /// Decimals round-trip at scale 2, negative and large included.
    #[test]
    fn decimal_round_trip() {
        for s in ["0", "0.01", "-0.01", "123.45", "-128.00", "127.99", "1.28", "99999999999999999.99"] {
            let d: Decimal = s.parse().unwrap();
            let b = decimal_bytes(&d, 2).unwrap();
            assert_eq!(decimal_from_bytes(&b, "amount", 2).unwrap(), d, "{s}");
        }
        assert!(decimal_bytes(&"1.234".parse().unwrap(), 2).is_err());
        assert!(decimal_bytes(&"1000000000000000000.00".parse().unwrap(), 2).is_err());
    }
}
