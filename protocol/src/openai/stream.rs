//! The chunks of a streamed answer (each one `data:` event; [`crate::sse`] reads them back).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::response::Usage;
use super::{ASSISTANT, CHAT_COMPLETION_CHUNK, TEXT_COMPLETION};

/// One /v1/completions stream chunk.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CompletionChunk {
    pub id: String,
    pub object: Cow<'static, str>,
    pub created: u64,
    pub model: String,
    /// Empty in the usage chunk.
    pub choices: Vec<CompletionChunkChoice>,
    /// Only in the last chunk, when the client asked for `stream_options.include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CompletionChunkChoice {
    pub index: u32,
    pub text: String,
    /// Always null: log-probabilities are not produced.
    pub logprobs: Option<Value>,
    /// Null until the last text chunk.
    pub finish_reason: Option<String>,
}

/// One /v1/chat/completions stream chunk.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: Cow<'static, str>,
    pub created: u64,
    pub model: String,
    /// Empty in the usage chunk.
    pub choices: Vec<ChatChunkChoice>,
    /// Only in the last chunk, when the client asked for `stream_options.include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: Delta,
    /// Always null: log-probabilities are not produced.
    pub logprobs: Option<Value>,
    /// Null until the last chunk, whose delta is empty.
    pub finish_reason: Option<String>,
}

/// What a chat chunk adds to the message: the role once, at the start; then content.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Identity of one streamed answer, repeated in every chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChunkHeader {
    /// A completion chunk carrying `text` (empty for the last one), and the finish reason on
    /// the last one.
    pub fn completion(&self, text: &str, finish_reason: Option<&str>) -> CompletionChunk {
        CompletionChunk {
            id: self.id.clone(),
            object: Cow::Borrowed(TEXT_COMPLETION),
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChunkChoice {
                index: 0,
                text: text.to_string(),
                logprobs: None,
                finish_reason: finish_reason.map(str::to_string),
            }],
            usage: None,
        }
    }

    /// A chat chunk: `role` opens the message, `text` is its content so far, the finish reason
    /// comes on the last one.
    pub fn chat(&self, text: Option<&str>, role: bool, finish_reason: Option<&str>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: Cow::Borrowed(CHAT_COMPLETION_CHUNK),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta: Delta { role: role.then_some(Cow::Borrowed(ASSISTANT)), content: text.map(str::to_string) },
                logprobs: None,
                finish_reason: finish_reason.map(str::to_string),
            }],
            usage: None,
        }
    }

    /// The completion stream's usage chunk: no choices.
    pub fn completion_usage(&self, usage: Usage) -> CompletionChunk {
        CompletionChunk { choices: Vec::new(), usage: Some(usage), ..self.completion("", None) }
    }

    /// The chat stream's usage chunk: no choices.
    pub fn chat_usage(&self, usage: Usage) -> ChatCompletionChunk {
        ChatCompletionChunk { choices: Vec::new(), usage: Some(usage), ..self.chat(None, false, None) }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sse::{parse_data, SseItem};

    fn header() -> ChunkHeader {
        ChunkHeader { id: "chatcmpl-1".into(), created: 7, model: "tiny".into() }
    }

    #[test]
    fn chat_chunks_carry_the_role_once_and_no_empty_fields() {
        let h = header();
        let text = |chunk: &ChatCompletionChunk| serde_json::to_string(chunk).unwrap();
        assert_eq!(
            text(&h.chat(Some(""), true, None)),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "tiny",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                                "finish_reason": null}]})
            .to_string()
        );
        assert_eq!(
            text(&h.chat(None, false, Some("stop"))),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "tiny",
                   "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]})
            .to_string()
        );
        assert_eq!(
            text(&h.chat_usage(Usage::new(1, 2))),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "tiny",
                   "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
            .to_string()
        );
    }

    #[test]
    fn completion_chunks_read_back_through_the_sse_codec() {
        let h = header();
        let chunk = serde_json::to_string(&h.completion("ab", None)).unwrap();
        assert_eq!(
            parse_data(&chunk, false),
            SseItem::Chunk { text: "ab".into(), completion_tokens: None, prompt_tokens: None }
        );
        let usage = serde_json::to_string(&h.completion_usage(Usage::new(4, 5))).unwrap();
        assert_eq!(
            parse_data(&usage, false),
            SseItem::Chunk { text: String::new(), completion_tokens: Some(5), prompt_tokens: Some(4) }
        );
        let chat = serde_json::to_string(&h.chat(Some("c"), false, None)).unwrap();
        assert_eq!(
            parse_data(&chat, false),
            SseItem::Chunk { text: "c".into(), completion_tokens: None, prompt_tokens: None }
        );
        let back: CompletionChunk = serde_json::from_str(&chunk).unwrap();
        assert_eq!(back, h.completion("ab", None));
    }
}
