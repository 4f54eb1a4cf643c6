//! vLLM's `/tokenize` and `/detokenize`: what the model sees for a prompt or chat messages.
//! Tokenizing runs on a blocking thread, never on the async workers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::generate::read_body;
use super::types::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use super::validation;
use super::{AppState, InFlight};
use crate::engine::ModelHandle;
use crate::error::{RequestError, RequestResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub async fn tokenize(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, |body, state| Ok(Json(tokenize_body(body, state)?).into_response())).await
}

pub async fn detokenize(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, |body, state| Ok(Json(detokenize_body(body, state)?).into_response())).await
}

/// Counts the request like the generation endpoints and runs `work` on a blocking thread.
async fn handle(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    work: fn(&[u8], &AppState) -> RequestResult<Response>,
) -> Response {
    let mut in_flight = InFlight::start(&state);
    match run(&state, &headers, body, work).await {
        Ok(response) => {
            in_flight.finish(200);
            response
        }
        Err(e) => {
            in_flight.fail(&e);
            if e.status_code() >= 500 && !matches!(e, RequestError::Draining | RequestError::NotReady) {
                tracing::warn!(error = %e, kind = e.metric_label(), "request failed");
            }
            e.into_response()
        }
    }
}

async fn run(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    work: fn(&[u8], &AppState) -> RequestResult<Response>,
) -> RequestResult<Response> {
    if state.draining.load(Ordering::Acquire) {
        return Err(RequestError::Draining);
    }
    if state.engine.model().is_none() {
        return Err(RequestError::NotReady);
    }
    let body = read_body(state, headers, body).await?;
    let worker_state = state.clone();
    state.front_door.run(move || work(&body, &worker_state)).await
}

/// The request's fields and the model, after the same checks as the other endpoints
/// (a bad body is 400, another model's name 404).
fn parse<'s, T: serde::de::DeserializeOwned>(body: &[u8], state: &'s AppState) -> RequestResult<(T, &'s ModelHandle)> {
    let (request, common): (T, _) = validation::parse_json(body)?;
    validation::check_model_name(common.model.as_deref(), &state.served_model_name)?;
    Ok((request, state.engine.model().ok_or(RequestError::NotReady)?))
}

fn tokenize_body(body: &[u8], state: &AppState) -> RequestResult<TokenizeResponse> {
    let (request, model): (TokenizeRequest, _) = parse(body, state)?;
    let tokens = match (request.prompt, request.messages) {
        (Some(_), Some(_)) => {
            return Err(RequestError::invalid("send either `prompt` or `messages`, not both", "prompt"));
        }
        (None, None) => return Err(RequestError::invalid("one of `prompt` and `messages` is required", "prompt")),
        (Some(prompt), None) => {
            validation::prompt_ids(&model.tokenizer, &prompt, request.add_special_tokens.unwrap_or(true))?
        }
        (None, Some(messages)) => validation::chat_prompt(
            validation::ChatInput {
                messages,
                tools: request.tools,
                add_generation_prompt: request.add_generation_prompt,
            },
            model,
            request.add_special_tokens.unwrap_or(false),
        )?,
    };
    let token_strs = request
        .return_token_strs
        .unwrap_or(false)
        .then(|| tokens.iter().map(|&id| model.tokenizer.token_text(id).unwrap_or_default()).collect());
    Ok(TokenizeResponse { count: tokens.len(), max_model_len: model.info.context_length, tokens, token_strs })
}

fn detokenize_body(body: &[u8], state: &AppState) -> RequestResult<DetokenizeResponse> {
    let (request, model): (DetokenizeRequest, _) = parse(body, state)?;
    let Some(tokens) = request.tokens else {
        return Err(RequestError::invalid("`tokens` is required", "tokens"));
    };
    let vocab = model.tokenizer.vocab_size();
    if let Some(bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(RequestError::invalid(format!("token id {bad} is outside the vocabulary (0..{vocab})"), "tokens"));
    }
    Ok(DetokenizeResponse { prompt: model.tokenizer.decode(&tokens)? })
}
