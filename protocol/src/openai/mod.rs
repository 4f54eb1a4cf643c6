//! OpenAI's wire types as infergate speaks them: what clients send ([`request`]), the whole
//! answers ([`response`]), the streamed chunks ([`stream`]), the error body ([`error`]), and vLLM's tokenizer
//! endpoints ([`tokenize`]).
//!
//! The server deserializes requests and serializes answers through these types; the bench and
//! the operator's probe build their requests with them. Field order is the order on the wire
//! (serde_json keeps insertion order in this workspace), so a change here is a visible change
//! of the protocol. Validation of the values is the server's (`server/src/api/validation.rs`).

pub mod error;
pub mod request;
pub mod response;
pub mod stream;
pub mod tokenize;

/// The `object` of a /v1/completions answer and of its stream chunks.
pub const TEXT_COMPLETION: &str = "text_completion";
/// The `object` of a whole /v1/chat/completions answer.
pub const CHAT_COMPLETION: &str = "chat.completion";
/// The `object` of a /v1/chat/completions stream chunk.
pub const CHAT_COMPLETION_CHUNK: &str = "chat.completion.chunk";
/// The role of every generated message.
pub const ASSISTANT: &str = "assistant";
