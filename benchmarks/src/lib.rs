//! The paystream load generator and the pieces the benchmarks share.
//!
//! `loadgen` sends signed webhooks to ingest, open-loop at a target rate (latency measured
//! from each request's intended send time, so a stalled server cannot hide its stall) or
//! closed-loop with N connections, with duplicates and bad requests mixed in on request, and
//! optionally follows `paystream.payments.events.v1` to measure end-to-end latency and to
//! prove that every accepted payment produced exactly one outcome event.

pub mod bench;
pub mod loadgen;
pub mod plot;
