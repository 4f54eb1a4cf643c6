//! The server survives its own faults, on the real binary: engine death, a drain with a queue,
//! a flood of requests, large prompts at the front door, oversized and slow bodies, clients
//! that leave, requests cut by their deadline.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{assert_openai_error, client, metric_or_zero as metric, post_json, sse, Server};
use infergate_protocol::metrics;
use serde_json::{json, Value};

/// The tests here run one at a time: each measures how fast one server answers while it is
/// loaded, and nine servers generating at once on a small machine would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn metrics(server: &Server) -> String {
    client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

fn long_request(stream: bool) -> Value {
    json!({"prompt": "Tell me a long story.", "max_tokens": 400, "ignore_eos": true, "stream": stream})
}

/// Status and whole body of one request; a streaming 200 reads to its end.
async fn outcome(url: String, body: Value) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = client().post(url).json(&body).send().await.expect("an answer, not a dropped connection");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, text, started.elapsed())
}

#[tokio::test]
async fn an_engine_panic_turns_everything_503_and_answers_every_client() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Batch of 2, shedding off so all six are accepted: two run, four wait in the queue.
    let server =
        Server::start(&["--inject-engine-panic-after-steps", "30", "--max-batch-size", "2", "--shed-factor", "0"], &[]);
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(tokio::spawn(outcome(server.url("/v1/completions"), long_request(i % 2 == 0))));
    }
    let answered = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(clients))
        .await
        .expect("every client answered after the engine died");
    for joined in answered {
        let (status, text, _) = joined.unwrap();
        match status {
            503 => assert!(text.contains("engine"), "{text}"),
            // A stream that had started ends with an error event, not a hang or [DONE].
            200 => {
                assert!(text.contains("engine_stopped"), "stream did not end with the engine error: {text}");
                assert!(!text.contains("[DONE]"), "{text}");
            }
            other => panic!("unexpected status {other}: {text}"),
        }
    }
    for path in ["/health", "/ready"] {
        let resp = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{path} after the engine died");
    }
    let (status, body, took) = outcome(server.url("/v1/completions"), json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_secs(1), "a new request waited {took:?} for its 503");
    let text = metrics(&server).await;
    assert!(metric(&text, &format!("{}{{reason=\"engine_error\"", metrics::REQUEST_FAILURES.full)) >= 6.0, "{text}");
}

#[tokio::test]
async fn sigterm_with_40_queued_answers_all_and_exits_zero_in_time() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut server =
        Server::start(&["--max-batch-size", "1", "--shed-factor", "0", "--drain-timeout-seconds", "2"], &[]);
    let mut clients = Vec::new();
    for _ in 0..41 {
        clients.push(tokio::spawn(outcome(server.url("/v1/completions"), long_request(false))));
    }
    // Bounded wait until 40 are queued behind the running one.
    let mut queued = 0.0;
    for _ in 0..200 {
        queued = metric(&metrics(&server).await, metrics::REQUESTS_WAITING.full);
        if queued >= 40.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued, 40.0, "40 requests never waited in the queue");
    let started = Instant::now();
    server.sigterm();
    let answered = tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(clients))
        .await
        .expect("every queued and running client answered");
    let mut statuses = Vec::new();
    for joined in answered {
        let (status, text, _) = joined.unwrap();
        assert!(status == 200 || status == 503, "{status}: {text}");
        if status == 503 {
            assert!(serde_json::from_str::<Value>(&text).is_ok_and(|v| v.get("error").is_some()), "{text}");
        }
        statuses.push(status);
    }
    assert!(statuses.iter().filter(|s| **s == 503).count() >= 40, "{statuses:?}");
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
    // Drain timeout 2 s plus a few seconds for the engine to stop and the answers to leave.
    assert!(started.elapsed() < Duration::from_secs(8), "exit took {:?}", started.elapsed());
}

// Two client threads: 300 streams read on one thread would delay reading the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_request_flood_gets_only_200_429_503_and_every_refusal_is_fast() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Default settings (30 s timeout, batch 32, queue 1000), as a new user would run it.
    let server = Server::start(&[], &[]);
    let request = json!({"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 24,
                         "ignore_eos": true, "stream": true});
    let mut clients = Vec::new();
    for _ in 0..300 {
        let url = server.url("/v1/chat/completions");
        let body = request.clone();
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = client().post(url).json(&body).send().await.expect("an answer");
            let status = resp.status().as_u16();
            let headers_after = started.elapsed();
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let text = resp.text().await.unwrap_or_default();
            (status, headers_after, retry_after, text)
        }));
    }
    let answered = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(clients))
        .await
        .expect("the flood was answered");
    let (mut ok, mut refused, mut slowest_refusal) = (0, 0, Duration::ZERO);
    for joined in answered {
        let (status, took, retry_after, text) = joined.unwrap();
        match status {
            200 => {
                assert!(text.trim_end().ends_with("data: [DONE]"), "a stream did not finish: {text}");
                assert!(!text.contains("\"error\""), "an accepted stream failed: {text}");
                ok += 1;
            }
            429 | 503 => {
                assert!(took < Duration::from_secs(1), "a refusal took {took:?}: {text}");
                slowest_refusal = slowest_refusal.max(took);
                if status == 429 {
                    assert!(retry_after.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)), "{text}");
                    let body: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                }
                refused += 1;
            }
            other => panic!("status {other} in the flood: {text}"),
        }
    }
    eprintln!("flood: {ok} x 200, {refused} refused, slowest refusal {slowest_refusal:?}");
    assert!(ok > 0, "nothing was served");
}

#[tokio::test]
async fn a_non_streaming_request_cut_by_its_deadline_keeps_its_text_and_shows_in_the_metrics() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&["--request-timeout-seconds", "2", "--shed-factor", "0"], &[]);
    let request = json!({"prompt": "Write an essay.", "max_tokens": 4000, "ignore_eos": true});
    let (status, body) = post_json(&server.url("/v1/completions"), &request).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    let partial = &body["error"]["partial"];
    assert!(!partial["text"].as_str().unwrap_or("").is_empty(), "the generated text was lost: {body}");
    assert!(partial["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0, "{body}");
    let text = metrics(&server).await;
    assert!(metric(&text, &format!("{}{{reason=\"timeout\"", metrics::REQUEST_FAILURES.full)) >= 1.0, "{text}");
    assert!(metric(&text, &format!("{}{{status=\"504\"", metrics::REQUESTS.full)) >= 1.0, "{text}");
}

#[tokio::test]
async fn max_tokens_that_cannot_fit_the_deadline_is_refused_up_front_and_the_default_cap_applies() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&["--request-timeout-seconds", "2", "--default-max-tokens", "8"], &[]);
    let models: Value = client().get(server.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["default_max_tokens"], 8, "{models}");
    // No max_tokens: the server's cap ends it, whatever is sampled.
    let chat = json!({"messages": [{"role": "user", "content": "Tell me about France."}], "ignore_eos": true});
    let (status, body) = post_json(&server.url("/v1/chat/completions"), &chat).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 8, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    // Now a step was measured: 4000 tokens cannot be generated in 2 s even when idle.
    let huge = json!({"prompt": "Write an essay.", "max_tokens": 4000});
    let started = Instant::now();
    let (status, body) = post_json(&server.url("/v1/completions"), &huge).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "max_tokens_exceeds_deadline", "{body}");
    assert_eq!(body["error"]["param"], "max_tokens", "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn health_stays_fast_while_large_prompts_flood_the_front_door() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&[], &[]);
    // 40 KB prompts: tokenizing and rendering them is the work that once ran on the async workers.
    let content = "The quick brown fox jumps over the lazy dog. ".repeat(900);
    let mut flood = Vec::new();
    for _ in 0..24 {
        let body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 1});
        flood.push(tokio::spawn(outcome(server.url("/v1/chat/completions"), body)));
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        for path in ["/health", "/ready", "/metrics"] {
            let started = Instant::now();
            let resp = client().get(server.url(path)).timeout(Duration::from_secs(2)).send().await;
            let took = started.elapsed();
            let resp = resp.unwrap_or_else(|e| panic!("{path} not answered within 2 s under the flood: {e}"));
            assert_eq!(resp.status(), 200, "{path}");
            slowest = slowest.max(took);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for joined in tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(flood)).await.unwrap() {
        let (status, text, _) = joined.unwrap();
        // Too long for the context (400), served, or refused at the front door (429).
        assert!([200, 400, 429].contains(&status), "{status}: {text}");
    }
    eprintln!("slowest probe under 24 x 40 KB prompts: {slowest:?}");
}

#[tokio::test]
async fn a_64_mib_body_gets_a_413_answer_and_slow_bodies_do_not_block_real_requests() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&[], &[]);
    let big = vec![b' '; 64 << 20];
    let resp = client()
        .post(server.url("/v1/completions"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("a 413 answer, not a reset connection");
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_openai_error(&body);

    // 64 connections that declare a body and send it a byte at a time (here: not at all).
    let address = server.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"pro"
        )
        .unwrap();
        slow.push(stream);
    }
    let (status, body) = post_json(&server.url("/v1/completions"), &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(status, 200, "{body}");
    drop(slow);
}

#[tokio::test]
async fn a_disconnect_storm_brings_running_and_waiting_back_to_zero() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&["--max-batch-size", "4", "--shed-factor", "0"], &[]);
    let mut clients = Vec::new();
    for _ in 0..12 {
        let url = server.url("/v1/completions");
        clients.push(tokio::spawn(async move {
            if let Ok(mut resp) = client().post(url).json(&long_request(true)).send().await {
                while let Ok(Some(_)) = resp.chunk().await {}
            }
        }));
    }
    // Bounded wait until four run and eight wait, then every client leaves at once.
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics(&server).await;
        if metric(&text, metrics::REQUESTS_RUNNING.full) == 4.0 && metric(&text, metrics::REQUESTS_WAITING.full) == 8.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&text, metrics::REQUESTS_WAITING.full), 8.0, "{text}");
    for c in &clients {
        c.abort();
    }
    for _ in 0..200 {
        text = metrics(&server).await;
        if metric(&text, metrics::REQUESTS_RUNNING.full) == 0.0 && metric(&text, metrics::REQUESTS_WAITING.full) == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&text, metrics::REQUESTS_RUNNING.full), 0.0, "{text}");
    assert_eq!(metric(&text, metrics::REQUESTS_WAITING.full), 0.0, "{text}");
    assert!(metric(&text, &format!("{}{{reason=\"cancelled\"", metrics::REQUEST_FAILURES.full)) >= 1.0, "{text}");
}

#[tokio::test]
async fn openai_edges_are_refused_clearly_with_openai_codes() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let base = common::shared();
    let url = |p: &str| format!("{base}{p}");
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                              "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (extra, param) in [
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"functions": [{"name": "f", "parameters": {}}]}), "functions"),
        (json!({"function_call": "auto"}), "function_call"),
    ] {
        let (status, body) = post_json(&url("/v1/chat/completions"), &chat(extra)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
        assert!(assert_openai_error(&body).contains("not supported"), "{body}");
    }
    // Content parts and an empty logit_bias are fine.
    let (status, body) = post_json(&url("/v1/chat/completions"), &chat(json!({"logit_bias": {}}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(&url("/v1/chat/completions"), &chat(json!({"model": "gpt-4"}))).await;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!("model_not_found")), "{body}");
    let (status, body) = post_json(&url("/v1/completions"), &json!({"prompt": "hi", "max_tokens": 1_000_000})).await;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("context_length_exceeded")), "{body}");
    // max_completion_tokens on /v1/completions too, winning over max_tokens.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 9, "max_completion_tokens": 3, "ignore_eos": true});
    let (status, value) = post_json(&url("/v1/completions"), &body).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["usage"]["completion_tokens"], 3, "{value}");
    let (status, events) = sse(
        &url("/v1/completions"),
        &json!({"prompt": "hi", "max_completion_tokens": 2,
        "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 2, "{usage}");
}
