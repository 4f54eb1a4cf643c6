//! OpenAI wire types: what clients send and what they get back. They live in
//! `infergate_protocol::openai`, shared with the bench and the operator's probe; this module
//! names them for the handlers.

pub use infergate_protocol::openai::error::{ErrorBody, ErrorDetail, PartialOutput};
pub use infergate_protocol::openai::request::{
    ChatRequest, CommonParams, CompletionRequest, PromptInput, StopInput, StreamOptions,
};
pub use infergate_protocol::openai::response::{ChatCompletion, Completion, ModelCard, ModelList, Usage};
pub use infergate_protocol::openai::stream::ChunkHeader;
pub use infergate_protocol::openai::tokenize::{
    DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
};
