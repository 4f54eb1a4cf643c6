//! The OpenAI API of the real binary on the real model, over HTTP.

mod common;

use common::{assert_openai_error, post_json, post_raw, shared, sse};
use infergate_protocol::metrics;
use serde_json::{json, Value};

fn url(path: &str) -> String {
    format!("{}{}", shared(), path)
}

async fn complete(body: Value) -> Value {
    let (status, value) = post_json(&url("/v1/completions"), &body).await;
    assert_eq!(status, 200, "{value}");
    value
}

#[tokio::test]
async fn chat_answers_the_capital_of_france() {
    let (status, body) = post_json(
        &url("/v1/chat/completions"),
        &json!({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0, "max_tokens": 30}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn completion_respects_max_tokens_with_ignore_eos() {
    let body =
        complete(json!({"prompt": "Once upon a time", "max_tokens": 7, "ignore_eos": true, "temperature": 0})).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert!(!body["choices"][0]["text"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn stop_strings_end_generation_before_the_stop() {
    let body =
        complete(json!({"prompt": "The capital of France is", "max_tokens": 30, "temperature": 0, "stop": ["."]}))
            .await;
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris") && !text.contains('.'), "{text}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn same_seed_same_text_and_different_seed_differs() {
    let ask = |seed: u64| {
        complete(
            json!({"prompt": "My favourite animal is", "max_tokens": 24, "temperature": 1.0, "seed": seed, "ignore_eos": true}),
        )
    };
    let a = ask(42).await["choices"][0]["text"].clone();
    let b = ask(42).await["choices"][0]["text"].clone();
    let c = ask(43).await["choices"][0]["text"].clone();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn chat_stream_sends_role_deltas_usage_and_done() {
    let (status, events) = sse(
        &url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "stream": true,
                "stream_options": {"include_usage": true}, "temperature": 0, "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let finish: Vec<_> = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "length");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.is_empty());
}

#[tokio::test]
async fn streamed_text_equals_the_non_streamed_text() {
    let request = json!({"prompt": "Three colours are", "max_tokens": 16, "temperature": 0, "ignore_eos": true});
    let whole = complete(request.clone()).await["choices"][0]["text"].as_str().unwrap().to_string();
    let mut streaming = request;
    streaming["stream"] = json!(true);
    let (status, events) = sse(&url("/v1/completions"), &streaming).await;
    assert_eq!(status, 200);
    let streamed: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(streamed, whole);
}

#[tokio::test]
async fn greedy_output_is_identical_alone_and_in_a_concurrent_batch() {
    let prompts = [
        "The quick brown fox",
        "In 1492, Columbus",
        "A recipe for pancakes: first,",
        "Rust is a programming language that",
        "The tallest mountain in the world is Mount Everest, which is located in the Himalayas on the border of",
        "Hi",
    ];
    let body = |p: &str| json!({"prompt": p, "max_tokens": 20, "temperature": 0, "ignore_eos": true});
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(complete(body(p)).await["choices"][0]["text"].clone());
    }
    let together = futures::future::join_all(prompts.iter().map(|p| complete(body(p)))).await;
    for (i, t) in together.iter().enumerate() {
        assert_eq!(t["choices"][0]["text"], alone[i], "prompt {i} changed inside a batch");
    }
}

#[tokio::test]
async fn models_health_ready_and_metrics() {
    let client = common::client();
    let models: Value = client.get(url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(client.get(url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(url("/ready")).send().await.unwrap().status(), 200);
    complete(json!({"prompt": "Hello", "max_tokens": 3})).await;
    let text = client.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    // Every family the protocol lists, except the VRAM gauges a CPU server does not export.
    let gpu_only = [metrics::GPU_MEMORY_USED, metrics::GPU_MEMORY_TOTAL];
    for series in metrics::ALL.iter().filter(|s| !gpu_only.contains(s)) {
        assert!(text.contains(series.full), "{} missing from /metrics", series.full);
    }
    let ttft_count = text
        .lines()
        .find(|l| l.starts_with(&format!("{}_count", metrics::TIME_TO_FIRST_TOKEN.full)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(ttft_count >= 1.0);
    assert!(text.contains(r#"revision="test-rev""#) && text.contains(r#"status="200""#));
}

#[tokio::test]
async fn bad_inputs_get_openai_errors_with_the_right_status() {
    let completions = url("/v1/completions");
    let chat = url("/v1/chat/completions");
    // (case, endpoint, body, expected status, expected `param`)
    type Case<'a> = (&'a str, &'a String, Vec<u8>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("malformed JSON", &completions, b"{\"prompt\": ".to_vec(), 400, None),
        ("non-UTF-8", &completions, vec![b'{', 0xff, 0xfe, b'}'], 400, None),
        ("not an object", &completions, b"[1,2]".to_vec(), 400, None),
        ("empty body", &completions, Vec::new(), 400, None),
        ("missing prompt", &completions, br#"{"max_tokens": 3}"#.to_vec(), 400, Some("prompt")),
        ("missing messages", &chat, br#"{"max_tokens": 3}"#.to_vec(), 400, Some("messages")),
        ("empty messages", &chat, br#"{"messages": []}"#.to_vec(), 400, Some("messages")),
        (
            "unknown role",
            &chat,
            br#"{"messages": [{"role": "wizard", "content": "hi"}]}"#.to_vec(),
            400,
            Some("messages[0].role"),
        ),
        (
            "temperature too high",
            &completions,
            br#"{"prompt": "a", "temperature": 3}"#.to_vec(),
            400,
            Some("temperature"),
        ),
        (
            "temperature wrong type",
            &completions,
            br#"{"prompt": "a", "temperature": "hot"}"#.to_vec(),
            400,
            Some("temperature"),
        ),
        (
            "negative max_tokens",
            &completions,
            br#"{"prompt": "a", "max_tokens": -1}"#.to_vec(),
            400,
            Some("max_tokens"),
        ),
        ("zero max_tokens", &completions, br#"{"prompt": "a", "max_tokens": 0}"#.to_vec(), 400, Some("max_tokens")),
        ("top_p zero", &completions, br#"{"prompt": "a", "top_p": 0}"#.to_vec(), 400, Some("top_p")),
        ("top_k negative", &completions, br#"{"prompt": "a", "top_k": -5}"#.to_vec(), 400, Some("top_k")),
        ("n > 1", &completions, br#"{"prompt": "a", "n": 2}"#.to_vec(), 400, Some("n")),
        ("stop wrong type", &completions, br#"{"prompt": "a", "stop": 5}"#.to_vec(), 400, Some("stop")),
        (
            "too many stops",
            &completions,
            br#"{"prompt": "a", "stop": ["a","b","c","d","e"]}"#.to_vec(),
            400,
            Some("stop"),
        ),
        (
            "max_tokens beyond context",
            &completions,
            br#"{"prompt": "a", "max_tokens": 100000}"#.to_vec(),
            400,
            Some("max_tokens"),
        ),
        ("unknown model", &completions, br#"{"prompt": "a", "model": "gpt-9"}"#.to_vec(), 404, None),
        (
            "stream wrong type",
            &chat,
            br#"{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#.to_vec(),
            400,
            Some("stream"),
        ),
    ];
    for (name, endpoint, body, status, param) in cases {
        let (got, value) = post_raw(endpoint, body).await;
        assert_eq!(got, status, "{name}: {value}");
        assert_openai_error(&value);
        if let Some(param) = param {
            assert_eq!(value["error"]["param"], param, "{name}: {value}");
        }
    }
}

#[tokio::test]
async fn prompt_longer_than_the_context_is_a_400() {
    let long = "word ".repeat(9000);
    let (status, body) = post_json(&url("/v1/completions"), &json!({"prompt": long, "max_tokens": 1})).await;
    assert_eq!(status, 400, "{body}");
    assert!(assert_openai_error(&body).contains("maximum context length"));
}

#[tokio::test]
async fn oversized_bodies_unknown_routes_and_wrong_methods() {
    let big = vec![b' '; 2 << 20];
    let (status, body) = post_raw(&url("/v1/completions"), big).await;
    assert_eq!(status, 413);
    assert_openai_error(&body);
    let client = common::client();
    let resp = client.get(url("/v1/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_openai_error(&resp.json().await.unwrap());
    let resp = client.get(url("/v1/completions")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_openai_error(&resp.json().await.unwrap());
}
