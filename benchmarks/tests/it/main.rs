//! Integration tests of the benchmarks' peers against the real PostgreSQL and Apache Kafka of
//! the local stack (`scripts/stack up`). Each test has its own database and topics. Nothing
//! here is timed: the peers must do the same work as paystream, which is what is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

mod seed;
