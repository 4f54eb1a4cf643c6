//! Every error leaves as OpenAI's error JSON with the matching status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::Error;

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: &'static str,
    /// What a non-streaming request had generated when its deadline cut it (504).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Seconds a client should wait after a 429 before retrying.
const RETRY_AFTER_SECONDS: u64 = 1;

impl Error {
    fn error_type(&self) -> &'static str {
        match self.status_code() {
            400 | 404 | 405 | 413 => "invalid_request_error",
            429 => "rate_limit_error",
            503 => "service_unavailable_error",
            504 => "timeout_error",
            _ => "server_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let param = match self {
            Error::InvalidRequest { param, .. } => param.clone(),
            Error::ContextLengthExceeded { param, .. } => Some(param.to_string()),
            Error::DeadlineTooShort { .. } => Some("max_tokens".into()),
            Error::ModelNotFound { .. } => Some("model".into()),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.error_type(),
                param,
                code: self.code(),
                partial: None,
            },
        }
    }

    /// OpenAI's `code` where OpenAI has one (`rate_limit_exceeded`, `context_length_exceeded`,
    /// `model_not_found`); our own label otherwise.
    fn code(&self) -> &'static str {
        match self {
            Error::QueueFull { .. } | Error::Overloaded { .. } | Error::FrontDoorFull { .. } => "rate_limit_exceeded",
            _ => self.metric_label(),
        }
    }

    /// Seconds a refused client should wait before retrying, for the errors that say so.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::Overloaded { retry_after_seconds, .. } => Some((*retry_after_seconds).max(1)),
            Error::QueueFull { .. } | Error::FrontDoorFull { .. } | Error::Draining | Error::NotReady => {
                Some(RETRY_AFTER_SECONDS)
            }
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
