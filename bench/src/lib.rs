//! Pure building blocks of `infergate-bench`: percentiles, prompt and arrival
//! generators, per-request records and the run summary, the JSON report (`run_report`: written
//! and read back through one type); SSE parsing is `infergate_protocol`'s `sse`, shared with
//! the operator. `client` holds the HTTP side and the
//! load loops; `benchmarks` turns a whole `scripts/bench.sh` run into BENCHMARKS.md; the binary
//! (`main.rs`) adds argument parsing, the RSS/CPU samplers and output.

pub mod arrivals;
pub mod benchmarks;
pub mod client;
pub mod cpu;
pub mod error;
pub mod prompt;
pub mod report;
pub mod run_report;
pub mod stats;
