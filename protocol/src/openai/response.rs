//! The whole (non-streamed) answers, and /v1/models.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ASSISTANT, CHAT_COMPLETION, TEXT_COMPLETION};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// A /v1/completions answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: Cow<'static, str>,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    /// Always null: log-probabilities are not produced.
    pub logprobs: Option<Value>,
    pub finish_reason: Option<String>,
}

/// A /v1/chat/completions answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: Cow<'static, str>,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    /// Always null: log-probabilities are not produced.
    pub logprobs: Option<Value>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatMessage {
    pub role: Cow<'static, str>,
    pub content: String,
}

impl Completion {
    /// The one-choice answer the server sends.
    pub fn single(id: String, created: u64, model: String, text: String, finish_reason: &str, usage: Usage) -> Self {
        Self {
            id,
            object: Cow::Borrowed(TEXT_COMPLETION),
            created,
            model,
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: Some(finish_reason.into()),
            }],
            usage,
        }
    }
}

impl ChatCompletion {
    /// The one-choice answer the server sends: the assistant's message.
    pub fn single(id: String, created: u64, model: String, text: String, finish_reason: &str, usage: Usage) -> Self {
        Self {
            id,
            object: Cow::Borrowed(CHAT_COMPLETION),
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage { role: Cow::Borrowed(ASSISTANT), content: text },
                logprobs: None,
                finish_reason: Some(finish_reason.into()),
            }],
            usage,
        }
    }
}

/// One entry of /v1/models.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: Cow<'static, str>,
    pub created: u64,
    pub owned_by: Cow<'static, str>,
    pub max_model_len: usize,
    /// The completion length a chat request gets when it sends no `max_tokens`
    /// (`--default-max-tokens`).
    pub default_max_tokens: usize,
}

/// /v1/models.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ModelList {
    pub object: Cow<'static, str>,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_serialize_in_openais_field_order() {
        let usage = Usage::new(3, 2);
        let completion = Completion::single("cmpl-1".into(), 7, "tiny".into(), "ab".into(), "length", usage);
        assert_eq!(
            serde_json::to_string(&completion).unwrap(),
            json!({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "tiny",
                   "choices": [{"index": 0, "text": "ab", "logprobs": null, "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
            .to_string()
        );
        let chat = ChatCompletion::single("chatcmpl-1".into(), 7, "tiny".into(), "ab".into(), "stop", usage);
        assert_eq!(
            serde_json::to_string(&chat).unwrap(),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "tiny",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ab"}, "logprobs": null,
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
            .to_string()
        );
        let back: ChatCompletion = serde_json::from_str(&serde_json::to_string(&chat).unwrap()).unwrap();
        assert_eq!(back, chat);
    }
}
