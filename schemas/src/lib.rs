//! The paystream wire contract: the Avro schemas in `schemas/avro/` and the Rust types that
//! match them. Nothing else in the workspace defines a wire type.
//!
//! Values travel in Avro single-object encoding: `0xC3 0x01`, the 8-byte little-endian
//! CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro
//! binary body. Any Avro library decodes them with the `.avsc` files and no registry.

mod binary;
mod canonical;
mod codec;
mod types;

pub use canonical::parsing_canonical_form;
pub use codec::{decode, encode, fingerprint64, Record, SchemaError, WireSchema};
pub use types::{
    decode_inbound, Allocation, CommandKind, DeadLetter, EventType, Inbound, Invalid, PaymentCommand, PaymentEvent,
    UnprocessableWebhook, MAX_AMOUNT_EXCLUSIVE, MAX_ID_LEN,
};
