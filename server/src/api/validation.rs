//! Turns OpenAI requests into validated prompts and generation parameters.

use serde::de::DeserializeOwned;

use super::types::{ChatRequest, CommonParams, CompletionRequest, PromptInput, StopInput};
use crate::engine::{GenerationParams, ModelHandle, SamplingParams};
use crate::error::{RequestError, RequestResult};
use crate::model::{RenderOptions, TextTokenizer};
use serde_json::Value;

/// OpenAI's default for /v1/completions.
const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;
const MAX_STOP_STRINGS: usize = 4;
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// The two generation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions`
    Completions,
    /// `/v1/chat/completions`
    Chat,
}

/// The body length a request declares in `Content-Length`; None when absent or not a number
/// (the body is then limited as it streams in).
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
}

/// A whole body of `endpoint` to a request the engine can run: JSON, the model name, then the
/// endpoint's fields. Needs only the model's facts (tokenizer, template), not a loaded model,
/// which is how the fuzz target (server/fuzz) calls it.
pub fn validate(
    endpoint: Endpoint,
    body: &[u8],
    served_model_name: &str,
    model: &ModelHandle,
    limits: Limits,
) -> RequestResult<ValidRequest> {
    match endpoint {
        Endpoint::Completions => {
            let (request, common): (CompletionRequest, _) = parse_json(body)?;
            check_model_name(common.model.as_deref(), served_model_name)?;
            completion(request, common, model, limits)
        }
        Endpoint::Chat => {
            let (request, common): (ChatRequest, _) = parse_json(body)?;
            check_model_name(common.model.as_deref(), served_model_name)?;
            chat(request, common, model, limits)
        }
    }
}

/// A request the engine can run.
#[derive(Debug)]
pub struct ValidRequest {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub stream: bool,
    pub include_usage: bool,
    /// Prompt text to prepend to the answer (completions `echo`).
    pub echo: Option<String>,
}

/// Parses a JSON body into the endpoint's fields and the shared ones, naming the
/// offending field in any error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> RequestResult<(T, CommonParams)> {
    let text = std::str::from_utf8(body)
        .map_err(|e| RequestError::invalid(format!("request body is not valid UTF-8: {e}"), None))?;
    if text.trim().is_empty() {
        return Err(RequestError::invalid("request body is empty; expected a JSON object", None));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| RequestError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(RequestError::invalid("request body must be a JSON object", None));
    }
    let common = from_value(value.clone())?;
    Ok((from_value(value)?, common))
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> RequestResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = path.split(['.', '[']).next().unwrap_or("").to_string();
        let message = if path == "." { inner } else { format!("invalid value for `{path}`: {inner}") };
        RequestError::InvalidRequest { message, param: (!field.is_empty() && field != ".").then_some(field) }
    })
}

pub fn check_model_name(requested: Option<&str>, served: &str) -> RequestResult<()> {
    match requested {
        Some(name) if !name.is_empty() && name != served => {
            Err(RequestError::ModelNotFound { requested: name.to_string(), served: served.to_string() })
        }
        _ => Ok(()),
    }
}

fn stop_strings(stop: Option<StopInput>) -> RequestResult<Vec<String>> {
    let stops = match stop {
        None => Vec::new(),
        Some(StopInput::One(s)) => vec![s],
        Some(StopInput::Many(v)) => v,
    };
    if stops.len() > MAX_STOP_STRINGS {
        return Err(RequestError::invalid(format!("`stop` takes at most {MAX_STOP_STRINGS} strings"), "stop"));
    }
    if stops.iter().any(|s| s.is_empty()) {
        return Err(RequestError::invalid("`stop` strings must not be empty", "stop"));
    }
    Ok(stops)
}

/// Checks the sampling knobs shared by both endpoints.
fn sampling(common: &CommonParams) -> RequestResult<SamplingParams> {
    let temperature = common.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(RequestError::invalid(
            format!("`temperature` must be within [0, 2], got {temperature}"),
            "temperature",
        ));
    }
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(RequestError::invalid(format!("`top_p` must be within (0, 1], got {top_p}"), "top_p"));
    }
    let top_k = match common.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(RequestError::invalid(format!("`top_k` must be -1 (off) or at least 1, got {k}"), "top_k"))
        }
    };
    if common.n.is_some_and(|n| n != 1) {
        return Err(RequestError::invalid("only `n` = 1 is supported", "n"));
    }
    for (name, value) in
        [("presence_penalty", common.presence_penalty), ("frequency_penalty", common.frequency_penalty)]
    {
        if let Some(v) = value {
            if !(-2.0..=2.0).contains(&v) {
                return Err(RequestError::InvalidRequest {
                    message: format!("`{name}` must be within [-2, 2], got {v}"),
                    param: Some(name.into()),
                });
            }
            if v != 0.0 {
                return Err(RequestError::InvalidRequest {
                    message: format!("`{name}` is not supported; use 0"),
                    param: Some(name.into()),
                });
            }
        }
    }
    match &common.logprobs {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {}
        Some(_) => return Err(RequestError::invalid("`logprobs` is not supported", "logprobs")),
    }
    match &common.logit_bias {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.is_empty() => {}
        Some(_) => return Err(RequestError::invalid("`logit_bias` is not supported by this server", "logit_bias")),
    }
    Ok(SamplingParams { temperature, top_p, top_k, seed: common.seed.map(|s| s as u64) })
}

/// Token budget: explicit max_tokens must fit the context; the default fills it.
fn max_tokens(requested: Option<u32>, default: usize, prompt_len: usize, context: usize) -> RequestResult<usize> {
    if prompt_len == 0 {
        return Err(RequestError::invalid("the prompt is empty", "prompt"));
    }
    if prompt_len >= context {
        return Err(RequestError::ContextLengthExceeded {
            message: format!(
                "This model's maximum context length is {context} tokens; the prompt has {prompt_len} tokens"
            ),
            param: "messages",
        });
    }
    let room = context - prompt_len;
    match requested {
        Some(0) => Err(RequestError::invalid("`max_tokens` must be at least 1", "max_tokens")),
        Some(n) if n as usize > room => Err(RequestError::ContextLengthExceeded {
            message: format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt_len} in the prompt, {n} for the completion)",
                prompt_len + n as usize
            ),
            param: "max_tokens",
        }),
        Some(n) => Ok(n as usize),
        None => Ok(default.min(room)),
    }
}

fn finish(
    common: CommonParams,
    prompt: Vec<u32>,
    max_tokens: usize,
    echo: Option<String>,
) -> RequestResult<ValidRequest> {
    let sampling = sampling(&common)?;
    let stop = stop_strings(common.stop)?;
    let include_usage = common.stream_options.as_ref().is_some_and(|o| o.include_usage);
    if common.stream_options.is_some() && !common.stream {
        return Err(RequestError::invalid("`stream_options` is only allowed with `stream: true`", "stream_options"));
    }
    Ok(ValidRequest {
        prompt,
        params: GenerationParams { sampling, max_tokens, stop, ignore_eos: common.ignore_eos },
        stream: common.stream,
        include_usage,
        echo,
    })
}

/// Server-side limits that shape a request the client did not bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `--default-max-tokens`: chat completions without `max_tokens` stop there, so an
    /// answer that never samples EOS still ends long before the request timeout.
    pub default_max_tokens: usize,
}

/// `max_completion_tokens` wins over `max_tokens` (OpenAI's newer name), on both endpoints.
fn requested_max_tokens(common: &CommonParams) -> Option<u32> {
    common.max_completion_tokens.or(common.max_tokens)
}

pub fn completion(
    request: CompletionRequest,
    common: CommonParams,
    model: &ModelHandle,
    limits: Limits,
) -> RequestResult<ValidRequest> {
    if request.best_of.is_some_and(|b| b != 1) {
        return Err(RequestError::invalid("only `best_of` = 1 is supported", "best_of"));
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(RequestError::invalid("`suffix` is not supported", "suffix"));
    }
    let (prompt, text) = match request.prompt {
        None => return Err(RequestError::invalid("`prompt` is required", "prompt")),
        Some(PromptInput::Text(t)) => (model.tokenizer.encode(&t)?, t),
        Some(PromptInput::Texts(v)) if v.len() == 1 => (model.tokenizer.encode(&v[0])?, v[0].clone()),
        Some(PromptInput::Tokens(ids)) => {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= model.info.vocab_size) {
                return Err(RequestError::invalid(format!("token id {bad} is outside the vocabulary"), "prompt"));
            }
            let text = model.tokenizer.decode(&ids)?;
            (ids, text)
        }
        Some(PromptInput::TokenBatches(v)) if v.len() == 1 => {
            return completion(
                CompletionRequest { prompt: Some(PromptInput::Tokens(v[0].clone())), ..request },
                common,
                model,
                limits,
            )
        }
        Some(_) => {
            return Err(RequestError::invalid(
                "batched prompts are not supported; send one prompt per request",
                "prompt",
            ))
        }
    };
    let default = DEFAULT_COMPLETION_MAX_TOKENS.min(limits.default_max_tokens);
    let max = max_tokens(requested_max_tokens(&common), default, prompt.len(), model.info.context_length)?;
    finish(common, prompt, max, request.echo.then_some(text))
}

pub fn chat(
    request: ChatRequest,
    common: CommonParams,
    model: &ModelHandle,
    limits: Limits,
) -> RequestResult<ValidRequest> {
    let Some(messages) = request.messages else {
        return Err(RequestError::invalid("`messages` is required", "messages"));
    };
    for (name, value) in [("functions", &request.functions), ("function_call", &request.function_call)] {
        if value.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(RequestError::InvalidRequest {
                message: format!("`{name}` (legacy function calling) is not supported; use `tools`"),
                param: Some(name.into()),
            });
        }
    }
    if let Some(format) = &request.response_format {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(RequestError::invalid(
                "only `response_format` {\"type\": \"text\"} is supported",
                "response_format",
            ));
        }
    }
    let chat = ChatInput { messages, tools: request.tools, add_generation_prompt: request.add_generation_prompt };
    let prompt = chat_prompt(chat, model, true)?;
    let max =
        max_tokens(requested_max_tokens(&common), limits.default_max_tokens, prompt.len(), model.info.context_length)?;
    finish(common, prompt, max, None)
}

/// What a chat prompt is rendered from: the client's messages and tools as JSON.
pub struct ChatInput {
    pub messages: Vec<Value>,
    pub tools: Option<Vec<Value>>,
    /// Opens the assistant's turn at the end (default true).
    pub add_generation_prompt: Option<bool>,
}

/// The token ids of a chat rendered through the model's chat template: the chat endpoint
/// passes `add_special_tokens = true`, /tokenize the request's flag.
pub fn chat_prompt(chat: ChatInput, model: &ModelHandle, add_special_tokens: bool) -> RequestResult<Vec<u32>> {
    if chat.messages.is_empty() {
        return Err(RequestError::invalid("`messages` must not be empty", "messages"));
    }
    let tools = match chat.tools {
        Some(tools) if !tools.is_empty() => {
            for (i, tool) in tools.iter().enumerate() {
                check_tool(i, tool)?;
            }
            Some(tools)
        }
        _ => None,
    };
    let Some(template) = &model.chat_template else {
        return Err(RequestError::invalid(
            "this model has no chat template: start the server with --chat-template FILE, or use /v1/completions",
            "messages",
        ));
    };
    let mut messages = Vec::with_capacity(chat.messages.len());
    for (i, m) in chat.messages.into_iter().enumerate() {
        let mut m = check_message(i, m)?;
        if !template.takes_content_parts() {
            join_text_parts(&mut m);
        }
        messages.push(m);
    }
    let options = RenderOptions {
        tools: tools.as_deref(),
        add_generation_prompt: chat.add_generation_prompt.unwrap_or(true),
        now: None,
    };
    let text = template.render(&messages, &options)?;
    prompt_ids(&model.tokenizer, &text, add_special_tokens)
}

/// Prompt text to ids with special-token strings parsed; `add_special_tokens` adds what the
/// model declares (BOS) unless the text already starts with it, as completions and chat send.
pub fn prompt_ids(tokenizer: &TextTokenizer, text: &str, add_special_tokens: bool) -> RequestResult<Vec<u32>> {
    if add_special_tokens {
        Ok(tokenizer.encode(text)?)
    } else {
        Ok(tokenizer.encode_with(text, false, true)?)
    }
}

fn bad_message(message: String, param: String) -> RequestError {
    RequestError::InvalidRequest { message, param: Some(param) }
}

/// Checks one message's shape; returns it as the template will see it (`developer` read as
/// `system`, as OpenAI does). Other keys (`name`, `tool_call_id`, ...) pass through.
fn check_message(i: usize, message: Value) -> RequestResult<Value> {
    let Value::Object(mut map) = message else {
        return Err(bad_message(format!("messages[{i}] must be an object"), format!("messages[{i}]")));
    };
    let role = match map.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
        Some(Value::String(r)) => {
            return Err(bad_message(
                format!("messages[{i}].role `{r}` is not one of {}", ROLES.join(", ")),
                format!("messages[{i}].role"),
            ))
        }
        _ => return Err(bad_message(format!("messages[{i}].role must be a string"), format!("messages[{i}].role"))),
    };
    match map.get("content") {
        None | Some(Value::Null) if role == "assistant" => {}
        None | Some(Value::Null) => {
            return Err(bad_message(
                format!("messages[{i}].content is required for the `{role}` role"),
                format!("messages[{i}].content"),
            ))
        }
        Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("text"), Some(Value::String(_))) => {}
                    (Some("text"), _) => {
                        return Err(bad_message(
                            format!("messages[{i}].content[{j}].text must be a string"),
                            format!("messages[{i}].content[{j}].text"),
                        ))
                    }
                    (Some(kind), _) => {
                        return Err(bad_message(
                            format!("messages[{i}].content[{j}] is a `{kind}` part; only `text` parts are supported"),
                            format!("messages[{i}].content[{j}].type"),
                        ))
                    }
                    (None, _) => {
                        return Err(bad_message(
                            format!("messages[{i}].content[{j}] must be an object with a string `type`"),
                            format!("messages[{i}].content[{j}]"),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(bad_message(
                format!("messages[{i}].content must be a string or an array of content parts"),
                format!("messages[{i}].content"),
            ))
        }
    }
    match map.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) if role == "assistant" => {
            for (j, call) in calls.iter().enumerate() {
                if call.pointer("/function/name").and_then(Value::as_str).is_none() {
                    return Err(bad_message(
                        format!("messages[{i}].tool_calls[{j}] must have a string `function.name`"),
                        format!("messages[{i}].tool_calls[{j}].function.name"),
                    ));
                }
            }
        }
        Some(Value::Array(_)) => {
            return Err(bad_message(
                format!("messages[{i}].tool_calls is only allowed on `assistant` messages"),
                format!("messages[{i}].tool_calls"),
            ))
        }
        Some(_) => {
            return Err(bad_message(
                format!("messages[{i}].tool_calls must be an array"),
                format!("messages[{i}].tool_calls"),
            ))
        }
    }
    if role == "tool" && !matches!(map.get("tool_call_id"), Some(Value::String(_))) {
        return Err(bad_message(
            format!("messages[{i}].tool_call_id (a string) is required for the `tool` role"),
            format!("messages[{i}].tool_call_id"),
        ));
    }
    if role == "developer" {
        map.insert("role".into(), Value::String("system".into()));
    }
    Ok(Value::Object(map))
}

/// A template that reads content as a string gets the text parts joined with newlines (vLLM's
/// "string" content format); others get the parts as sent.
fn join_text_parts(message: &mut Value) {
    if let Some(content) = message.get_mut("content") {
        if let Value::Array(parts) = content {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            *content = Value::String(texts.join("\n"));
        }
    }
}

/// An OpenAI function tool: `{"type": "function", "function": {"name": ..., ...}}`.
fn check_tool(i: usize, tool: &Value) -> RequestResult<()> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad_message(format!("tools[{i}].type must be `function`"), format!("tools[{i}].type")));
    }
    if tool.pointer("/function/name").and_then(Value::as_str).is_none() {
        return Err(bad_message(
            format!("tools[{i}].function.name must be a string"),
            format!("tools[{i}].function.name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod chat_template_tests {
    use std::sync::Arc;

    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::Tokenizer;

    use super::*;
    use crate::model::{ChatTemplate, ModelInfo, TextTokenizer};

    fn handle(template: Option<&str>) -> ModelHandle {
        let vocab = [("<unk>".to_string(), 0u32)].into_iter().collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().unwrap();
        let tokenizer = TextTokenizer::from_tokenizer(Tokenizer::new(model), None, vec![], false);
        ModelHandle {
            info: ModelInfo {
                architecture: crate::model::Architecture::Llama,
                context_length: 4096,
                vocab_size: 1,
                stop_token_ids: vec![],
                kv_bytes_per_token: 1,
            },
            chat_template: template.map(|t| ChatTemplate::with_tokens(t, String::new(), String::new()).unwrap()),
            tokenizer: Arc::new(tokenizer),
        }
    }

    fn chat_with(template: Option<&str>, body: serde_json::Value) -> RequestResult<ValidRequest> {
        let (request, common) = parse_json::<ChatRequest>(body.to_string().as_bytes())?;
        chat(request, common, &handle(template), Limits { default_max_tokens: 512 })
    }

    #[test]
    fn chat_template_a_model_without_one_is_a_clear_400() {
        let err = chat_with(None, serde_json::json!({"messages": [{"role": "user", "content": "hi"}]})).unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert!(err.to_string().contains("no chat template"), "{err}");
    }

    #[test]
    fn chat_template_shapes_are_checked() {
        let t = Some("{{ messages | tojson }}");
        for (body, needle) in [
            (serde_json::json!({"messages": [{"role": "user"}]}), "content is required"),
            (serde_json::json!({"messages": [{"role": "robot", "content": "x"}]}), "is not one of"),
            (serde_json::json!({"messages": ["hi"]}), "must be an object"),
            (
                serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "only `text` parts",
            ),
            (serde_json::json!({"messages": [{"role": "user", "content": 3}]}), "string or an array"),
            (serde_json::json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "x"}]}), "tools[0]"),
            (
                serde_json::json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
                "only allowed on `assistant`",
            ),
        ] {
            let err = chat_with(t, body.clone()).unwrap_err();
            assert_eq!(err.status_code(), 400, "{body}");
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn chat_template_raise_is_a_400_with_its_message() {
        let t = Some("{{ raise_exception('Conversation roles must alternate') }}");
        let err = chat_with(t, serde_json::json!({"messages": [{"role": "user", "content": "x"}]})).unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    }

    /// Bodies of the kinds the fuzz target (server/fuzz) mutates toward, through `validate`
    /// as the handlers call it: each must be a 400 naming the problem, never a panic. Inputs
    /// from fuzz crashes are added here (see DEVELOPERS.md, "Fuzzing").
    #[test]
    fn fuzz_regressions_hostile_bodies_are_400s() {
        let model = handle(Some("{{ messages | tojson }}"));
        let limits = Limits { default_max_tokens: 16 };
        let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases: [(Endpoint, &[u8], &str); 11] = [
            (Endpoint::Chat, b"\xff\xfe{}", "not valid UTF-8"),
            (Endpoint::Chat, b"  \n", "is empty"),
            (Endpoint::Completions, nested.as_bytes(), "not valid JSON"),
            (Endpoint::Chat, b"[1]", "must be a JSON object"),
            (Endpoint::Completions, br#"{"prompt": [[]]}"#, "the prompt is empty"),
            (Endpoint::Completions, br#"{"prompt": [4294967295]}"#, "outside the vocabulary"),
            (Endpoint::Completions, br#"{"prompt": "x", "max_tokens": 4294967296}"#, "max_tokens"),
            (Endpoint::Completions, br#"{"prompt": "x", "max_tokens": 0}"#, "at least 1"),
            (Endpoint::Chat, br#"{"messages": [{"role": "user", "content": [{"text": "x"}]}]}"#, "string `type`"),
            (
                Endpoint::Chat,
                br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}"#,
                ".text must be a string",
            ),
            (Endpoint::Chat, br#"{"model": "other", "messages": []}"#, "does not exist"),
        ];
        for (endpoint, body, needle) in cases {
            let err = validate(endpoint, body, "", &model, limits).unwrap_err();
            let shown = String::from_utf8_lossy(body);
            assert!((400..500).contains(&err.status_code()), "{shown}: {err}");
            assert!(err.to_string().contains(needle), "{shown}: {err}");
        }
    }
}
