//! The memory-sized KV cache on the real binary: a prompt that can never fit is a 400, and a
//! cache with room for about one long sequence still completes every concurrent request.

mod common;

use common::{assert_openai_error, client, metric_value, post_json, Server};
use infergate_protocol::metrics;
use serde_json::{json, Value};

async fn metrics(server: &Server) -> String {
    client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// A prompt of roughly `words` tokens.
fn long_prompt(words: usize) -> String {
    (0..words).map(|i| ["apple", "river", "stone", "cloud"][i % 4]).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn a_prompt_that_can_never_fit_the_kv_cache_is_a_400_with_an_openai_error() {
    // 64 tokens = 4 blocks: far below the model's context, so only the KV cache refuses it.
    let server = Server::start(&["--max-kv-tokens", "64"], &[]);
    let text = metrics(&server).await;
    assert_eq!(metric_value(&text, metrics::KV_CACHE_BLOCKS_TOTAL.full), Some(4.0), "{text}");
    for (path, body) in [
        ("/v1/completions", json!({"prompt": long_prompt(100), "max_tokens": 4})),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": long_prompt(100)}], "max_tokens": 4})),
    ] {
        let (status, body) = post_json(&server.url(path), &body).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = assert_openai_error(&body);
        assert!(message.contains("KV cache blocks"), "{message}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    // A prompt that fits is still served, and ends at the cache size at the latest.
    let (status, body) = post_json(
        &server.url("/v1/completions"),
        &json!({"prompt": "Hello there", "max_tokens": 200, "ignore_eos": true, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let usage = &body["usage"];
    assert_eq!(usage["total_tokens"], 64, "the whole cache is the longest sequence: {body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn with_room_for_one_long_sequence_concurrent_requests_queue_preempt_and_all_complete() {
    // 256 tokens = 16 blocks; each request grows to about 150 tokens (10 blocks), so two do
    // not fit together: requests wait and running ones are preempted and recomputed.
    // They run about one at a time, so the last finishes near the default 30 s deadline on a
    // busy machine, where load shedding (overload.rs tests it) would rightly refuse it: this
    // test is about the KV cache, so it gets a longer deadline and no shedding.
    let server =
        Server::start(&["--max-kv-tokens", "256", "--request-timeout-seconds", "120", "--shed-factor", "0"], &[]);
    let prompts: Vec<String> = (0..5).map(|i| format!("Story number {i}: {}", long_prompt(30 + 4 * i))).collect();
    let body = |p: &str| json!({"prompt": p, "max_tokens": 100, "temperature": 0, "ignore_eos": true});
    let complete = |p: String| {
        let url = server.url("/v1/completions");
        async move { post_json(&url, &body(&p)).await }
    };
    let mut alone = Vec::new();
    for p in &prompts {
        let (status, value) = complete(p.clone()).await;
        assert_eq!(status, 200, "{value}");
        alone.push(value);
    }
    assert_eq!(metric_value(&metrics(&server).await, metrics::PREEMPTIONS.full), Some(0.0));
    let together: Vec<(u16, Value)> = futures::future::join_all(prompts.iter().cloned().map(complete)).await;
    for (i, (status, value)) in together.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {value}");
        assert_eq!(value["usage"]["completion_tokens"], 100, "request {i}: {value}");
        assert_eq!(value["choices"][0]["text"], alone[i]["choices"][0]["text"], "request {i} changed under preemption");
    }
    let text = metrics(&server).await;
    let preemptions = metric_value(&text, metrics::PREEMPTIONS.full).unwrap_or(0.0);
    assert!(preemptions >= 1.0, "the tiny cache preempted nobody: {text}");
    assert_eq!(metric_value(&text, metrics::KV_CACHE_BLOCKS_USED.full), Some(0.0), "every block was freed");
    assert_eq!(metric_value(&text, metrics::KV_CACHE_USAGE.full), Some(0.0));
}
