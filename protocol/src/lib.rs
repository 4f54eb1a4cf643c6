//! The contracts between infergate's server, operator and bench, written once.
//!
//! | contract | module | who reads it |
//! |---|---|---|
//! | OpenAI wire types: requests, answers, stream chunks, the error body | [`openai`] | server (reads requests, writes answers), bench and operator probe (write requests) |
//! | OpenAI streaming (SSE) codec, one streaming client | [`sse`], [`client`] | bench, operator probe, server tests |
//! | metric names, labels, histogram buckets, which statuses are errors | [`metrics`] | server (exports), operator gate (reads, PromQL) |
//! | the server's flags and environment variables | [`server_flags`] | server (clap), operator (pod args and env) |
//! | the model-source grammar and its table of examples | [`model_source`] | server (`--model`), operator (spec + CEL test) |
//! | logging (`RUST_LOG`, `--log-format`) and the stop signal | `process` | every binary |
//!
//! Nothing here depends on candle or kube: the crate builds in seconds and every consumer
//! links the same definitions.

#[cfg(feature = "client")]
pub mod client;
pub mod metrics;
pub mod model_source;
pub mod openai;
#[cfg(feature = "process")]
pub mod process;
pub mod server_flags;
pub mod sse;
