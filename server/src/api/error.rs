//! Every request error leaves as OpenAI's error JSON with the matching status: the one place
//! that maps errors to HTTP.

use super::types::{ErrorBody, ErrorDetail};
use crate::error::{Error, RequestError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Seconds a client should wait after a 429 before retrying.
const RETRY_AFTER_SECONDS: u64 = 1;

impl RequestError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::InvalidRequest { .. }
            | RequestError::Tokenizer(_)
            | RequestError::ContextLengthExceeded { .. }
            | RequestError::DeadlineTooShort { .. } => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) | RequestError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            RequestError::QueueFull { .. } | RequestError::Overloaded { .. } | RequestError::FrontDoorFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RequestError::NotReady | RequestError::Draining | RequestError::EngineStopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RequestError::InjectedFault | RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::Server(Error::Tokenizer(_) | Error::Template(_)) => StatusCode::BAD_REQUEST,
            RequestError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// [`Self::status`] as a number (metrics, logs, tests).
    pub fn status_code(&self) -> u16 {
        self.status().as_u16()
    }

    fn error_type(&self) -> &'static str {
        match self.status_code() {
            400 | 404 | 405 | 408 | 413 => "invalid_request_error",
            429 => "rate_limit_error",
            503 => "service_unavailable_error",
            504 => "timeout_error",
            _ => "server_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let param = match self {
            RequestError::InvalidRequest { param, .. } => param.clone(),
            RequestError::ContextLengthExceeded { param, .. } => Some(param.to_string()),
            RequestError::DeadlineTooShort { .. } => Some("max_tokens".into()),
            RequestError::ModelNotFound { .. } => Some("model".into()),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.error_type().into(),
                param,
                code: self.code().into(),
                partial: None,
            },
        }
    }

    /// OpenAI's `code` where OpenAI has one (`rate_limit_exceeded`, `context_length_exceeded`,
    /// `model_not_found`); our own label otherwise.
    fn code(&self) -> &'static str {
        match self {
            RequestError::QueueFull { .. } | RequestError::Overloaded { .. } | RequestError::FrontDoorFull { .. } => {
                "rate_limit_exceeded"
            }
            _ => self.metric_label(),
        }
    }

    /// Seconds a refused client should wait before retrying, for the errors that say so.
    fn retry_after(&self) -> Option<u64> {
        match self {
            RequestError::Overloaded { retry_after_seconds, .. } => Some((*retry_after_seconds).max(1)),
            RequestError::QueueFull { .. }
            | RequestError::FrontDoorFull { .. }
            | RequestError::Draining
            | RequestError::NotReady => Some(RETRY_AFTER_SECONDS),
            _ => None,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_not_found_is_a_404_with_openais_code_and_the_model_param() {
        let error = RequestError::ModelNotFound { requested: "gpt-4".into(), served: "tiny".into() };
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        let body = error.body().error;
        assert_eq!(
            (&*body.code, body.param.as_deref(), &*body.kind),
            ("model_not_found", Some("model"), "invalid_request_error")
        );
    }

    #[test]
    fn text_failures_of_the_model_side_are_the_clients_400_and_the_rest_a_500() {
        let tokenizer: RequestError = Error::Tokenizer("bad bytes".into()).into();
        assert_eq!((tokenizer.status_code(), &*tokenizer.body().error.code), (400, "tokenizer"));
        let template: RequestError = Error::Template("raised".into()).into();
        let body = template.body().error;
        assert_eq!((template.status_code(), body.param.as_deref()), (400, Some("messages")));
        assert_eq!(body.message, "the chat template failed: raised");
        let load: RequestError = Error::ModelLoad("gone".into()).into();
        assert_eq!((load.status_code(), &*load.body().error.code), (500, "model_load"));
    }
}
