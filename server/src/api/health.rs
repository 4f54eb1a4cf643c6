//! Liveness, readiness, metrics and the model list.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::types::{ModelCard, ModelList};
use super::AppState;
use crate::error::RequestError;

/// 200 while the engine loop is alive (also while loading); 503 when it died or hung.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.engine.status().is_alive() {
        (StatusCode::OK, "ok").into_response()
    } else {
        RequestError::EngineStopped.into_response()
    }
}

/// 200 once the model is loaded and warmed up; 503 before that and while draining.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.engine.status().is_stopped() {
        RequestError::EngineStopped.into_response()
    } else if state.draining.load(Ordering::Acquire) {
        RequestError::Draining.into_response()
    } else if !state.engine.status().is_ready() {
        RequestError::NotReady.into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.requests_waiting.set(state.engine.queue_len() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let max_model_len = state.engine.model().map(|m| m.info.context_length).unwrap_or(0);
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: state.served_model_name.clone(),
            object: "model".into(),
            created: state.started_unix,
            owned_by: "infergate".into(),
            max_model_len,
            default_max_tokens: state.config.default_max_tokens,
        }],
    })
    .into_response()
}

pub async fn not_found() -> Response {
    RequestError::NotFound(
        "Unknown route; see /v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize".into(),
    )
    .into_response()
}

pub async fn method_not_allowed() -> Response {
    RequestError::MethodNotAllowed("Method not allowed for this route".into()).into_response()
}
