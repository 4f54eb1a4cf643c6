//! vLLM's `/tokenize` and `/detokenize` (not OpenAI's, served next to it by the same server).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// vLLM's TokenizeCompletionRequest and TokenizeChatRequest in one: exactly one of
/// `prompt` and `messages`. `model` is read with the shared parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct TokenizeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Value>>,
    /// Tools passed to the chat template with `messages`, as in chat completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Adds BOS as the model asks (default: true for `prompt`, false for `messages`,
    /// whose template writes its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_special_tokens: Option<bool>,
    /// Ends the rendered messages with the assistant turn's opening (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_token_strs: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_strs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct DetokenizeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_strings_appear_only_when_asked_for() {
        let mut answer = TokenizeResponse { count: 2, max_model_len: 8, tokens: vec![1, 2], token_strs: None };
        assert_eq!(serde_json::to_string(&answer).unwrap(), r#"{"count":2,"max_model_len":8,"tokens":[1,2]}"#);
        answer.token_strs = Some(vec!["a".into(), "b".into()]);
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<TokenizeResponse>(&text).unwrap(), answer);
    }
}
