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
    let (status, text, took, _) = timed_outcome(url, body).await;
    (status, text, took)
}

/// `outcome`, with the instant the answer ended.
async fn timed_outcome(url: String, body: Value) -> (u16, String, Duration, Instant) {
    let started = Instant::now();
    let resp = client().post(url).json(&body).send().await.expect("an answer, not a dropped connection");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, text, started.elapsed(), Instant::now())
}

/// One GET probe: its status (0 when not answered within `limit`) and how long it took.
async fn probe(url: String, limit: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let status = match client().get(url).timeout(limit).send().await {
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    };
    (status, started.elapsed())
}

/// The error event of an SSE body, if it has one (an event whose top-level object has an
/// `error`: the generated text itself may well say "error").
fn stream_error(text: &str) -> Option<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event.get("error").is_some())
}

/// The middle value of some durations (the upper one of the two middles).
fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

#[tokio::test]
async fn an_engine_panic_turns_everything_503_and_answers_every_client() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Batch of 2, shedding off so all six are accepted: two run, four wait in the queue.
    let server =
        Server::start(&["--inject-engine-panic-after-steps", "30", "--max-batch-size", "2", "--shed-factor", "0"], &[]);
    // Probes /health and /ready every 10 ms (bounded) until both answer 503: the instant they
    // do, and whether they answered 200 before the panic.
    let (health, ready) = (server.url("/health"), server.url("/ready"));
    let poller = tokio::spawn(async move {
        let mut seen_ready = false;
        for _ in 0..6000 {
            let ((h, _), (r, _)) = tokio::join!(
                probe(health.clone(), Duration::from_secs(1)),
                probe(ready.clone(), Duration::from_secs(1))
            );
            seen_ready |= h == 200 && r == 200;
            if h == 503 && r == 503 {
                return (seen_ready, Some(Instant::now()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (seen_ready, None)
    });
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(tokio::spawn(timed_outcome(server.url("/v1/completions"), long_request(i % 2 == 0))));
    }
    let answered = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(clients))
        .await
        .expect("every client answered after the engine died");
    // No client can be answered before the panic: the first answer bounds it from above.
    let first_answer = answered.iter().map(|joined| joined.as_ref().unwrap().3).min().unwrap();
    let (seen_ready, turned_503) = poller.await.unwrap();
    assert!(seen_ready, "/health and /ready never answered 200 together before the panic");
    let turned_503 = turned_503.expect("/health and /ready never both answered 503");
    let lag = turned_503.saturating_duration_since(first_answer);
    eprintln!("engine panic: /health and /ready both 503 {lag:?} after the first client was answered");
    // The poll runs every 10 ms and a probe takes milliseconds: 1 s is the bound with
    // room for a loaded machine, and far below the 60 s heartbeat of a silent engine death.
    assert!(lag < Duration::from_secs(1), "/health and /ready turned 503 only {lag:?} after the engine died");
    for joined in answered {
        let (status, text, _, _) = joined.unwrap();
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
    // Batch of 1, and a request too long to finish in the 2 s drain on any machine (8000
    // tokens one at a time, over 4000 tokens/s): the 40 queued behind the running one never
    // start, whatever the speed. A long timeout so that no deadline check refuses them.
    let mut server = Server::start(
        &[
            "--max-batch-size",
            "1",
            "--shed-factor",
            "0",
            "--drain-timeout-seconds",
            "2",
            "--request-timeout-seconds",
            "600",
        ],
        &[],
    );
    let request = json!({"prompt": "Tell me a long story.", "max_tokens": 8000, "ignore_eos": true});
    let mut clients = Vec::new();
    for _ in 0..41 {
        clients.push(tokio::spawn(outcome(server.url("/v1/completions"), request.clone())));
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
    let mut codes = Vec::new();
    for joined in answered {
        let (status, text, _) = joined.unwrap();
        // The running one is cut by the drain timeout (503 `engine_stopped`); the queued ones
        // are answered 503 `draining` without ever starting.
        assert_eq!(status, 503, "{text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_openai_error(&body);
        codes.push(body["error"]["code"].as_str().unwrap_or_default().to_string());
    }
    let draining = codes.iter().filter(|c| *c == "draining").count();
    let cut = codes.iter().filter(|c| *c == "engine_stopped").count();
    assert_eq!((draining, cut), (40, 1), "{codes:?}");
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
    // Twice: the first flood meets the warm-up's rate; the second meets the rate measured at a
    // full batch, where admission that leaves out prefill or host time accepts too much.
    for round in 1..=2 {
        flood_once(&server, round).await;
    }
}

async fn flood_once(server: &Server, round: usize) {
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
                assert!(text.trim_end().ends_with("data: [DONE]"), "flood {round}: a stream did not finish: {text}");
                assert!(stream_error(&text).is_none(), "flood {round}: an accepted stream failed: {text}");
                ok += 1;
            }
            429 | 503 => {
                assert!(took < Duration::from_secs(1), "flood {round}: a refusal took {took:?}: {text}");
                slowest_refusal = slowest_refusal.max(took);
                if status == 429 {
                    assert!(retry_after.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)), "{text}");
                    let body: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                }
                refused += 1;
            }
            other => panic!("flood {round}: status {other}: {text}"),
        }
    }
    eprintln!("flood {round}: {ok} x 200, {refused} refused, slowest refusal {slowest_refusal:?}");
    assert!(ok > 0, "flood {round}: nothing was served");
}

/// The body of the README's first request (its first `curl ... -d '...'`), read from the
/// README itself so the test always sends what a new user copies.
fn readme_first_request() -> Value {
    // cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time one otherwise.
    let package: std::path::PathBuf =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into);
    let readme = package.join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap_or_else(|e| panic!("{}: {e}", readme.display()));
    let curl = text.find("curl http").expect("a curl in the README");
    let data = text[curl..].find("-d '").map(|i| curl + i + 4).expect("the curl's -d body");
    let end = text[data..].find('\'').map(|i| data + i).expect("the body's closing quote");
    serde_json::from_str(&text[data..end]).unwrap_or_else(|e| panic!("README body {}: {e}", &text[data..end]))
}

#[tokio::test]
async fn the_readme_first_request_succeeds_20_times_out_of_20() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&[], &[]);
    let body = readme_first_request();
    // As the README sends it: chat, no max_tokens, the default temperature (sampled).
    assert!(body.get("max_tokens").is_none() && body.get("temperature").is_none(), "{body}");
    let stream = body["stream"].as_bool().unwrap_or(false);
    // One after another, as a new user tries it on `make run`: each on an idle server, so no
    // admission estimate can refuse it and only the server's own limits (the default
    // `max_tokens` cap within the request timeout) decide whether it succeeds.
    let (started, mut slowest, mut tokens) = (Instant::now(), Duration::ZERO, Vec::new());
    for attempt in 0..20 {
        let (status, text, took) = outcome(server.url("/v1/chat/completions"), body.clone()).await;
        assert_eq!(status, 200, "attempt {attempt}, after {took:?}: {text}");
        slowest = slowest.max(took);
        let content = if stream {
            let tail = &text[text.len().saturating_sub(1500)..];
            assert!(stream_error(&text).is_none(), "attempt {attempt} after {took:?}: ...{tail}");
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "attempt {attempt}: the stream did not finish: ...{tail}"
            );
            let chunks: Vec<Value> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .filter_map(|data| serde_json::from_str::<Value>(data).ok())
                .collect();
            tokens.push(chunks.len());
            chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect::<String>()
        } else {
            let value: Value = serde_json::from_str(&text).unwrap();
            tokens.push(value["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize);
            value["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
        };
        assert!(!content.trim().is_empty(), "attempt {attempt}: no text in the answer: {text}");
    }
    eprintln!(
        "README request: 20 x 200 in {:?}, slowest {slowest:?}, answer lengths (stream chunks / tokens) {tokens:?}",
        started.elapsed()
    );
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
    let mut probes = Vec::new();
    for _ in 0..20 {
        for path in ["/health", "/ready", "/metrics"] {
            // The kubelet's probe timeout is 3 s: a probe not answered by then kills the pod.
            let (status, took) = probe(server.url(path), Duration::from_secs(3)).await;
            assert_eq!(status, 200, "{path} under the flood (0: not answered within 3 s)");
            probes.push(took);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for joined in tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(flood)).await.unwrap() {
        let (status, text, _) = joined.unwrap();
        // Too long for the context (400), served, or refused at the front door (429).
        assert!([200, 400, 429].contains(&status), "{status}: {text}");
    }
    let (typical, slowest) = (median(&probes), probes.iter().max().copied().unwrap_or_default());
    eprintln!("probes under 24 x 40 KB prompts: median {typical:?}, slowest {slowest:?} ({} probes)", probes.len());
    // Starved probes (tokenization on the async workers) take seconds each; a noisy machine
    // delays a few of them, never the median: the 100 ms bound holds for the median,
    // and every probe stays far inside the kubelet's 3 s timeout.
    assert!(typical < Duration::from_millis(100), "median probe {typical:?} under the flood");
    assert!(slowest < Duration::from_secs(1), "slowest probe {slowest:?} under the flood");
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
async fn a_body_that_never_finishes_gets_408_at_the_request_deadline() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&["--request-timeout-seconds", "2"], &[]);
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"pro"
    )
    .unwrap();
    let started = Instant::now();
    // Bounded read: the answer must come at the 2 s deadline, not hang.
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(8), "the 408 came after {took:?}");
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
