//! The one streaming client: POST a completion request and read its SSE body.
//!
//! The bench times every text chunk, the operator's probe only the first, the server's tests
//! look at the payloads; all read the stream through [`stream`], which hands each event to the
//! caller as it arrives and returns how the response ended.

use futures::StreamExt;
use serde::Serialize;

use crate::sse::{SseDecoder, SseEvent, StreamState};

/// Why a request produced no stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFailure {
    /// Connecting or sending failed, or the connection closed before the response headers.
    Transport(String),
    /// The server answered with a status other than 200; `body` is its start.
    Status { status: u16, body: String },
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestFailure::Transport(e) => write!(f, "transport: {e}"),
            RequestFailure::Status { status, body } => write!(f, "HTTP {status}: {body}"),
        }
    }
}

/// How much of an error body is kept.
const ERROR_BODY_CHARS: usize = 200;

/// Sends `body` (an [`crate::openai::request::RequestBody`], or any JSON in tests) as JSON to `url` and reads the streamed answer, calling `on_event` for every
/// `data:` event in order. Returns the folded stream; its `end()` says whether `[DONE]`, an
/// error event or nothing ended it (a connection that broke mid-body is a cut stream, with
/// `broken` saying why). Timeouts are the caller's: drop the future to stop.
pub async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: &impl Serialize,
    mut on_event: impl FnMut(&SseEvent),
) -> Result<StreamState, RequestFailure> {
    let response = client.post(url).json(body).send().await.map_err(|e| RequestFailure::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await.unwrap_or_default();
        return Err(RequestFailure::Status { status, body: text.chars().take(ERROR_BODY_CHARS).collect() });
    }
    let mut decoder = SseDecoder::default();
    let mut state = StreamState::default();
    let mut bytes = response.bytes_stream();
    while let Some(piece) = bytes.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                state.broken = Some(e.to_string());
                return Ok(state);
            }
        };
        for event in decoder.push(&piece) {
            on_event(&event);
            state.observe(event.item);
        }
        if state.ended() {
            return Ok(state);
        }
    }
    if let Some(event) = decoder.finish() {
        on_event(&event);
        state.observe(event.item);
    }
    Ok(state)
}
