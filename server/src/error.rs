//! The crate's two error types, one per concern:
//! - [`Error`]: starting up and running the model (configuration, loading, the device, the
//!   tokenizer, tensor work); what `main` reports and the engine logs.
//! - [`RequestError`]: why one request was not answered with a completion; every one leaves as
//!   OpenAI's error JSON. Its HTTP status and OpenAI `code` are chosen in `api::error`, nowhere else.

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A result of the request path.
pub type RequestResult<T> = std::result::Result<T, RequestError>;

/// Start-up, load and compute failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load model: {0}")]
    ModelLoad(String),
    /// The compute device cannot be used (no GPU, no driver, a build without CUDA).
    #[error("{0}")]
    Device(String),
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    /// The chat template raised or failed on the messages it was given.
    #[error("the chat template failed: {0}")]
    Template(String),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::ModelLoad(_) => "model_load",
            Error::Device(_) => "device",
            Error::Tokenizer(_) => "tokenizer",
            Error::Template(_) => "invalid_request",
            Error::Tensor(_) => "tensor",
            Error::Internal(_) => "internal",
        }
    }
}

/// Why a request gets an error answer instead of a completion.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    /// The prompt could not be tokenized.
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The client did not finish sending its body before the request's deadline.
    #[error("the request body did not arrive within the request timeout ({seconds} s)")]
    BodyTimeout { seconds: u64 },
    /// A prompt (or prompt + max_tokens) longer than the served context.
    #[error("{message}")]
    ContextLengthExceeded { message: String, param: &'static str },
    #[error("`max_tokens` = {max_tokens} cannot be generated within the request timeout ({seconds} s) even on an idle server; lower max_tokens")]
    DeadlineTooShort { max_tokens: usize, seconds: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("The model `{requested}` does not exist; this server serves `{served}`")]
    ModelNotFound { requested: String, served: String },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the request queue is full ({capacity} waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("the server is overloaded: this request would finish in about {estimate_seconds} s, after its deadline; retry in {retry_after_seconds} s")]
    Overloaded { estimate_seconds: u64, retry_after_seconds: u64 },
    #[error("too many requests are waiting for tokenization ({capacity}); retry later")]
    FrontDoorFull { capacity: usize },
    #[error("the model is still loading")]
    NotReady,
    #[error("the server is draining and takes no new requests")]
    Draining,
    #[error("request timed out after {seconds} s (queue and generation)")]
    Timeout { seconds: u64 },
    #[error("injected fault (--inject-error-rate)")]
    InjectedFault,
    #[error("the inference engine has stopped")]
    EngineStopped,
    #[error("internal error: {0}")]
    Internal(String),
    /// A start-up or compute failure met while serving this request (the server's fault).
    #[error(transparent)]
    Server(Error),
}

impl From<Error> for RequestError {
    /// Tokenizer and template failures are about the request's text; the rest is the server's.
    fn from(error: Error) -> Self {
        match error {
            Error::Tokenizer(message) => RequestError::Tokenizer(message),
            Error::Template(message) => RequestError::InvalidRequest {
                message: format!("the chat template failed: {message}"),
                param: Some("messages".into()),
            },
            other => RequestError::Server(other),
        }
    }
}

impl RequestError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<&'static str>>) -> Self {
        RequestError::InvalidRequest { message: message.into(), param: param.into().map(str::to_string) }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RequestError::InvalidRequest { .. } => "invalid_request",
            RequestError::Tokenizer(_) => "tokenizer",
            RequestError::ContextLengthExceeded { .. } => "context_length_exceeded",
            RequestError::DeadlineTooShort { .. } => "max_tokens_exceeds_deadline",
            RequestError::ModelNotFound { .. } => "model_not_found",
            RequestError::Overloaded { .. } => "overloaded",
            RequestError::FrontDoorFull { .. } => "front_door_full",
            RequestError::BodyTooLarge { .. } => "body_too_large",
            RequestError::BodyTimeout { .. } => "body_timeout",
            RequestError::NotFound(_) => "not_found",
            RequestError::MethodNotAllowed(_) => "method_not_allowed",
            RequestError::QueueFull { .. } => "queue_full",
            RequestError::NotReady => "not_ready",
            RequestError::Draining => "draining",
            RequestError::Timeout { .. } => "timeout",
            RequestError::InjectedFault => "injected_fault",
            RequestError::EngineStopped => "engine_stopped",
            RequestError::Internal(_) => "internal",
            RequestError::Server(error) => error.metric_label(),
        }
    }
}
