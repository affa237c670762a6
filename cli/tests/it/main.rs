//! Integration tests against the real PostgreSQL and Kafka-protocol broker of the local
//! stack (`scripts/stack up`). Each test has its own database and topics.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod crosslang;
mod harness;
mod pipeline;
mod processor;
mod relay;
