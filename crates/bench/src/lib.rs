//! Benchmarks of Tributary against hand-written fred code (and NATS for RPC), each pair
//! measured side by side in the same run on the same Redis server.
//!
//! The binary `tributary-bench` runs one scenario (or `all`) and prints one JSON line per
//! scenario: the figures of each side, their ratios, the targets and whether they were met.
//! See `docs/performance.md` for the commands and the latest figures.
//!
//! - [`scenarios`]: one module per scenario, and the command-line [`Options`](scenarios::Options);
//! - [`baseline`]: the hand-written fred code the scenarios compare with;
//! - [`nats`]: the NATS request/reply baseline (private `nats-server`);
//! - [`codec`]: the envelope encode/decode workloads, shared with `benches/codec.rs`;
//! - [`env`](mod@env): the Redis server of a run and the clients both sides use;
//! - [`cpu`]: CPU time of the benchmark process and of Redis per operation;
//! - [`alloc`](mod@alloc): the counting allocator behind the allocations per operation;
//! - [`report`]: histograms, figures and the JSON line.

pub mod alloc;
pub mod baseline;
pub mod codec;
pub mod cpu;
pub mod env;
pub mod nats;
pub mod report;
pub mod scenarios;
