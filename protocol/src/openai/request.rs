//! What a client sends to /v1/completions and /v1/chat/completions.
//!
//! The server reads a body twice, once as the endpoint's own fields ([`CompletionRequest`],
//! [`ChatRequest`]) and once as the fields both endpoints share ([`CommonParams`]), so an error
//! names the field as the client wrote it. A client writes the two halves as one object:
//! [`RequestBody`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Parameters shared by both endpoints, read from the same JSON object as the endpoint's own
/// fields. A client leaves out what it does not set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct CommonParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens`; wins when both are sent (both endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// vLLM's extension: generate exactly `max_tokens`, past any end-of-sequence token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_eos: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Refused unless empty: silently ignoring it would change what clients get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Value>,
}

/// The fields only /v1/completions has.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct CompletionRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptInput>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub echo: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// The fields only /v1/chat/completions has.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ChatRequest {
    /// The messages as the client sent them (validated, then passed to the chat template as JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// The legacy function-calling fields: refused with a pointer to `tools`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// vLLM's extension: open the assistant's turn at the end of the prompt (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
}

/// One request body as a client writes it: the endpoint's fields and the shared ones in one
/// JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestBody<E> {
    #[serde(flatten)]
    pub endpoint: E,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// A /v1/completions body.
pub type CompletionBody = RequestBody<CompletionRequest>;
/// A /v1/chat/completions body.
pub type ChatBody = RequestBody<ChatRequest>;

impl CompletionBody {
    /// A streamed completion of `prompt` that generates exactly `max_tokens` tokens (what a
    /// load generator and a latency probe send: the answer's length does not depend on the
    /// model choosing to stop).
    pub fn streamed_fixed_length(prompt: &str, max_tokens: u32, model: Option<&str>) -> Self {
        Self {
            endpoint: CompletionRequest { prompt: Some(PromptInput::Text(prompt.to_string())), ..Default::default() },
            common: CommonParams {
                model: model.map(str::to_string),
                max_tokens: Some(max_tokens),
                stream: true,
                ignore_eos: true,
                ..Default::default()
            },
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_client_body_is_one_object_with_only_the_fields_set() {
        let mut body = CompletionBody::streamed_fixed_length("hi", 8, Some("tiny"));
        body.common.temperature = Some(0.0);
        body.common.stream_options = Some(StreamOptions { include_usage: true });
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            value,
            json!({"prompt": "hi", "model": "tiny", "max_tokens": 8, "temperature": 0.0, "stream": true,
                   "stream_options": {"include_usage": true}, "ignore_eos": true})
        );
    }

    #[test]
    fn the_server_reads_back_both_halves_of_what_a_client_wrote() {
        let mut body = CompletionBody::streamed_fixed_length("hi", 8, None);
        body.endpoint.echo = true;
        body.common.stop = Some(StopInput::Many(vec!["\n".into()]));
        let text = serde_json::to_string(&body).unwrap();
        let endpoint: CompletionRequest = serde_json::from_str(&text).unwrap();
        let common: CommonParams = serde_json::from_str(&text).unwrap();
        assert_eq!((endpoint, common), (body.endpoint, body.common));
    }

    #[test]
    fn prompts_of_every_shape_parse_as_the_server_distinguishes_them() {
        let parse = |v: Value| serde_json::from_value::<CompletionRequest>(json!({"prompt": v})).unwrap().prompt;
        assert_eq!(parse(json!("a")), Some(PromptInput::Text("a".into())));
        assert_eq!(parse(json!(["a"])), Some(PromptInput::Texts(vec!["a".into()])));
        assert_eq!(parse(json!([1, 2])), Some(PromptInput::Tokens(vec![1, 2])));
        assert_eq!(parse(json!([[1]])), Some(PromptInput::TokenBatches(vec![vec![1]])));
    }
}
