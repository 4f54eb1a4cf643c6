//! infergate-server: an OpenAI-compatible LLM server with continuous batching.
//!
//! Layers: `api` (HTTP, validation, errors) -> `engine` (queue, scheduler, sampling) ->
//! `model` (loading, tokenizer, batched forward). Tensor work happens only on the engine thread.

pub mod api;
pub mod cli;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod model;
pub mod server;

pub use config::Config;
pub use error::{Error, Result};
