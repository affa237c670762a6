//! Integration tests against the real PostgreSQL and Apache Kafka of the local stack
//! (`scripts/stack up`), and private servers where a test stops one. Each test has its own
//! database and topics.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod audit;
mod crosslang;
mod deadletters;
mod edge;
mod failover;
mod harness;
mod lgpd;
mod lifecycle;
mod logs;
mod lookup;
mod migration;
mod money;
mod observability;
mod openapi;
mod partitions;
mod pipeline;
mod processor;
mod prometheus;
mod relay;
mod roles;
mod tls;
