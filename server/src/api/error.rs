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
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Seconds a client should wait after a 429 before retrying.
const RETRY_AFTER_SECONDS: &str = "1";

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
            _ => None,
        };
        let code = match self {
            Error::NotFound(m) if m.starts_with("The model") => "model_not_found",
            _ => self.metric_label(),
        };
        ErrorBody { error: ErrorDetail { message: self.to_string(), kind: self.error_type(), param, code } }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if matches!(self, Error::QueueFull { .. } | Error::Draining | Error::NotReady) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}
