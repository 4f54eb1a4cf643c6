//! The HTTP layer: axum routes, OpenAI wire types, SSE, and error mapping.

pub mod error;
mod faults;
mod front_door;
mod generate;
mod health;
mod tokenize;
pub mod types;
pub mod validation;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use infergate_protocol::metrics::FailureReason;
use tokio::sync::Notify;

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Shared by every handler.
pub struct AppState {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub served_model_name: String,
    pub config: Config,
    pub started_unix: u64,
    /// Set on SIGTERM: readiness fails and new requests get 503.
    pub draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Wakes requests held by `--inject-hang-rate` when the drain starts.
    drain_started: Notify,
    /// The `--inject-*` faults and their request count.
    pub faults: faults::Faults,
    /// The bounded pool that tokenizes and renders templates.
    pub front_door: front_door::FrontDoor,
}

impl AppState {
    pub fn new(engine: Engine, metrics: Arc<Metrics>, served_model_name: String, config: Config) -> Self {
        let started_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        Self {
            engine,
            metrics,
            served_model_name,
            started_unix,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            drain_started: Notify::new(),
            faults: faults::Faults::from_config(&config),
            front_door: front_door::FrontDoor::new(config.effective_tokenizer_workers(), config.max_tokenizer_queue),
            config,
        }
    }

    /// Readiness fails and new requests get 503 from now on; held requests are let go.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain_started.notify_waiters();
    }

    /// Resolves once the drain has started.
    pub async fn wait_draining(&self) {
        loop {
            let notified = self.drain_started.notified();
            if self.draining.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a request as in flight and records its final status when dropped (499 if the
/// client left before an answer was recorded).
pub struct InFlight {
    state: Arc<AppState>,
    status: Option<u16>,
}

impl InFlight {
    pub fn start(state: &Arc<AppState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { state: state.clone(), status: None }
    }

    pub fn finish(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Records the error's status and, for the server's own failures, its reason in
    /// `request_failures_total` (invalid requests are the client's and are not counted there).
    pub fn fail(&mut self, error: &crate::error::RequestError) {
        self.status = Some(error.status_code());
        if let Some(reason) = failure_reason(error) {
            self.state.metrics.record_failure(reason.as_str());
        }
    }
}

/// Why a request failed, for `request_failures_total{reason}`; None for the client's errors.
fn failure_reason(error: &crate::error::RequestError) -> Option<FailureReason> {
    use crate::error::RequestError;
    match error {
        RequestError::Timeout { .. } => Some(FailureReason::Timeout),
        RequestError::QueueFull { .. }
        | RequestError::Overloaded { .. }
        | RequestError::FrontDoorFull { .. }
        | RequestError::Draining
        | RequestError::NotReady => Some(FailureReason::Rejected),
        e if e.status_code() >= 500 => Some(FailureReason::EngineError),
        _ => None,
    }
}

/// nginx's code for "client closed request".
const CLIENT_CLOSED: u16 = 499;

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.state.metrics.record_failure(FailureReason::Cancelled.as_str());
        }
        self.state.metrics.record_status(self.status.unwrap_or(CLIENT_CLOSED));
        if self.state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.idle.notify_waiters();
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(generate::completions))
        .route("/v1/chat/completions", post(generate::chat_completions))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/models", get(health::models))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .with_state(state)
}
