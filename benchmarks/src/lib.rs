//! paystream's load generator and benchmarks, and the `paystream-bench` binary that runs
//! them, kept out of the production `paystream` binary: what only measures has no place in
//! what runs the money.
//!
//! - `loadgen`: signed webhooks at a rate or closed loop, with the events read back;
//! - `bench`: every figure of `docs/benchmarks.md`, each beside its peer, in one run: the
//!   processor beside the seed systems' design (one PL/pgSQL call a payment), the relay
//!   beside a plain producer, ingest beside a bare server, paystream's whole pipeline beside
//!   the seed design's, and the CPU per payment of every process.

pub mod bench;
pub mod loadgen;
