//! Pure building blocks of `infergate-bench`: percentiles, SSE parsing, prompt and arrival
//! generators, per-request records and the run report. The binary (`main.rs`) adds the HTTP
//! client, the load loops and the RSS sampler.

pub mod arrivals;
pub mod cpu;
pub mod prompt;
pub mod report;
pub mod sse;
pub mod stats;
