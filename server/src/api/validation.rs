//! Turns OpenAI requests into validated prompts and generation parameters.

use serde::de::DeserializeOwned;

use super::types::{ChatRequest, CommonParams, CompletionRequest, Message, MessageContent, PromptInput, StopInput};
use crate::engine::{GenerationParams, ModelHandle, SamplingParams};
use crate::error::{Error, Result};
use crate::model::{ChatMessage, TextTokenizer};

/// OpenAI's default for /v1/completions.
const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;
const MAX_STOP_STRINGS: usize = 4;
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

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
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<(T, CommonParams)> {
    let text =
        std::str::from_utf8(body).map_err(|e| Error::invalid(format!("request body is not valid UTF-8: {e}"), None))?;
    if text.trim().is_empty() {
        return Err(Error::invalid("request body is empty; expected a JSON object", None));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("request body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(Error::invalid("request body must be a JSON object", None));
    }
    let common = from_value(value.clone())?;
    Ok((from_value(value)?, common))
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = path.split(['.', '[']).next().unwrap_or("").to_string();
        let message = if path == "." { inner } else { format!("invalid value for `{path}`: {inner}") };
        Error::InvalidRequest { message, param: (!field.is_empty() && field != ".").then_some(field) }
    })
}

pub fn check_model_name(requested: Option<&str>, served: &str) -> Result<()> {
    match requested {
        Some(name) if !name.is_empty() && name != served => {
            Err(Error::NotFound(format!("The model `{name}` does not exist; this server serves `{served}`")))
        }
        _ => Ok(()),
    }
}

fn stop_strings(stop: Option<StopInput>) -> Result<Vec<String>> {
    let stops = match stop {
        None => Vec::new(),
        Some(StopInput::One(s)) => vec![s],
        Some(StopInput::Many(v)) => v,
    };
    if stops.len() > MAX_STOP_STRINGS {
        return Err(Error::invalid(format!("`stop` takes at most {MAX_STOP_STRINGS} strings"), "stop"));
    }
    if stops.iter().any(|s| s.is_empty()) {
        return Err(Error::invalid("`stop` strings must not be empty", "stop"));
    }
    Ok(stops)
}

/// Checks the sampling knobs shared by both endpoints.
fn sampling(common: &CommonParams) -> Result<SamplingParams> {
    let temperature = common.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(Error::invalid(format!("`temperature` must be within [0, 2], got {temperature}"), "temperature"));
    }
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::invalid(format!("`top_p` must be within (0, 1], got {top_p}"), "top_p"));
    }
    let top_k = match common.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => return Err(Error::invalid(format!("`top_k` must be -1 (off) or at least 1, got {k}"), "top_k")),
    };
    if common.n.is_some_and(|n| n != 1) {
        return Err(Error::invalid("only `n` = 1 is supported", "n"));
    }
    for (name, value) in
        [("presence_penalty", common.presence_penalty), ("frequency_penalty", common.frequency_penalty)]
    {
        if let Some(v) = value {
            if !(-2.0..=2.0).contains(&v) {
                return Err(Error::InvalidRequest {
                    message: format!("`{name}` must be within [-2, 2], got {v}"),
                    param: Some(name.into()),
                });
            }
            if v != 0.0 {
                return Err(Error::InvalidRequest {
                    message: format!("`{name}` is not supported; use 0"),
                    param: Some(name.into()),
                });
            }
        }
    }
    match &common.logprobs {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {}
        Some(_) => return Err(Error::invalid("`logprobs` is not supported", "logprobs")),
    }
    Ok(SamplingParams { temperature, top_p, top_k, seed: common.seed.map(|s| s as u64) })
}

/// Token budget: explicit max_tokens must fit the context; the default fills it.
fn max_tokens(requested: Option<u32>, default: usize, prompt_len: usize, context: usize) -> Result<usize> {
    if prompt_len == 0 {
        return Err(Error::invalid("the prompt is empty", "prompt"));
    }
    if prompt_len >= context {
        return Err(Error::invalid(
            format!("This model's maximum context length is {context} tokens; the prompt has {prompt_len} tokens"),
            "messages",
        ));
    }
    let room = context - prompt_len;
    match requested {
        Some(0) => Err(Error::invalid("`max_tokens` must be at least 1", "max_tokens")),
        Some(n) if n as usize > room => Err(Error::invalid(
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt_len} in the prompt, {n} for the completion)",
                prompt_len + n as usize
            ),
            "max_tokens",
        )),
        Some(n) => Ok(n as usize),
        None => Ok(default.min(room)),
    }
}

fn finish(common: CommonParams, prompt: Vec<u32>, max_tokens: usize, echo: Option<String>) -> Result<ValidRequest> {
    let sampling = sampling(&common)?;
    let stop = stop_strings(common.stop)?;
    let include_usage = common.stream_options.as_ref().is_some_and(|o| o.include_usage);
    if common.stream_options.is_some() && !common.stream {
        return Err(Error::invalid("`stream_options` is only allowed with `stream: true`", "stream_options"));
    }
    Ok(ValidRequest {
        prompt,
        params: GenerationParams { sampling, max_tokens, stop, ignore_eos: common.ignore_eos },
        stream: common.stream,
        include_usage,
        echo,
    })
}

pub fn completion(request: CompletionRequest, common: CommonParams, model: &ModelHandle) -> Result<ValidRequest> {
    if request.best_of.is_some_and(|b| b != 1) {
        return Err(Error::invalid("only `best_of` = 1 is supported", "best_of"));
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(Error::invalid("`suffix` is not supported", "suffix"));
    }
    let (prompt, text) = match request.prompt {
        None => return Err(Error::invalid("`prompt` is required", "prompt")),
        Some(PromptInput::Text(t)) => (model.tokenizer.encode(&t)?, t),
        Some(PromptInput::Texts(v)) if v.len() == 1 => (model.tokenizer.encode(&v[0])?, v[0].clone()),
        Some(PromptInput::Tokens(ids)) => {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= model.info.vocab_size) {
                return Err(Error::invalid(format!("token id {bad} is outside the vocabulary"), "prompt"));
            }
            let text = model.tokenizer.decode(&ids)?;
            (ids, text)
        }
        Some(PromptInput::TokenBatches(v)) if v.len() == 1 => {
            return completion(
                CompletionRequest { prompt: Some(PromptInput::Tokens(v[0].clone())), ..request },
                common,
                model,
            )
        }
        Some(_) => {
            return Err(Error::invalid("batched prompts are not supported; send one prompt per request", "prompt"))
        }
    };
    let max = max_tokens(common.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS, prompt.len(), model.info.context_length)?;
    finish(common, prompt, max, request.echo.then_some(text))
}

pub fn chat(request: ChatRequest, common: CommonParams, model: &ModelHandle) -> Result<ValidRequest> {
    let Some(messages) = request.messages else {
        return Err(Error::invalid("`messages` is required", "messages"));
    };
    if messages.is_empty() {
        return Err(Error::invalid("`messages` must not be empty", "messages"));
    }
    if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(Error::invalid("`tools` are not supported", "tools"));
    }
    if let Some(format) = &request.response_format {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(Error::invalid("only `response_format` {\"type\": \"text\"} is supported", "response_format"));
        }
    }
    let prompt = chat_prompt(messages, model, true, true)?;
    let requested = request.max_completion_tokens.or(common.max_tokens);
    let max = max_tokens(requested, usize::MAX, prompt.len(), model.info.context_length)?;
    finish(common, prompt, max, None)
}

/// The token ids of chat `messages` rendered through the model's chat template: the chat
/// endpoint's prompt with (`true`, `true`); /tokenize passes the request's flags.
/// `add_special_tokens` adds BOS as the model asks, unless the template already did.
pub fn chat_prompt(
    messages: Vec<Message>,
    model: &ModelHandle,
    add_generation_prompt: bool,
    add_special_tokens: bool,
) -> Result<Vec<u32>> {
    if messages.is_empty() {
        return Err(Error::invalid("`messages` must not be empty", "messages"));
    }
    let mut chat = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(Error::InvalidRequest {
                message: format!("messages[{i}].role `{}` is not one of {}", m.role, ROLES.join(", ")),
                param: Some(format!("messages[{i}].role")),
            });
        }
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(Error::InvalidRequest {
                                message: format!("messages[{i}] has a `{kind}` content part; only text is supported"),
                                param: Some(format!("messages[{i}].content")),
                            })
                        }
                    }
                }
                text
            }
        };
        // The chat template maps developer to system, as OpenAI does.
        let role = if m.role == "developer" { "system".to_string() } else { m.role };
        chat.push(ChatMessage { role, content });
    }
    let Some(template) = &model.chat_template else {
        return Err(Error::invalid("this model has no chat template; use /v1/completions", "messages"));
    };
    let text = template.render_with(&chat, add_generation_prompt)?;
    prompt_ids(&model.tokenizer, &text, add_special_tokens)
}

/// Prompt text to ids with special-token strings parsed; `add_special_tokens` adds what the
/// model declares (BOS) unless the text already starts with it, as completions and chat send.
pub fn prompt_ids(tokenizer: &TextTokenizer, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
    if add_special_tokens {
        tokenizer.encode(text)
    } else {
        tokenizer.encode_with(text, false, true)
    }
}
