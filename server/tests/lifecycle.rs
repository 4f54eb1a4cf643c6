//! Server lifecycle on the real binary: drain, overload, timeouts, fault injection, config
//! errors and model sources.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_openai_error, client, metric_or_zero as metric_value, post_json, sse, Server};
use futures::StreamExt;
use infergate_protocol::{metrics, server_flags as flags};
use serde_json::{json, Value};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_zero() {
    let mut server = Server::start(&["--drain-timeout-seconds", "60"], &[]);
    let request = json!({"prompt": "Tell me a long story.", "max_tokens": 250, "ignore_eos": true, "stream": true});
    let resp = client().post(server.url("/v1/completions")).json(&request).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").unwrap();
    assert!(!first.is_empty());
    server.sigterm();
    // Readiness flips and new work is refused while the stream keeps going.
    let mut refused = false;
    for _ in 0..50 {
        let ready = client().get(server.url("/ready")).send().await.unwrap();
        if ready.status() == 503 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "/ready never turned 503 after SIGTERM");
    let (status, value) = post_json(&server.url("/v1/completions"), &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(status, 503, "{value}");
    assert_openai_error(&value);
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.expect("the in-flight stream finishes cleanly"));
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "in-flight stream was cut: ...{}",
        &text[text.len().saturating_sub(200)..]
    );
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_while_the_model_loads_exits_zero_at_once() {
    // The larger test model (its load takes longest); the port is bound before the load.
    let gemma = common::gemma_model_path();
    let mut server = Server::spawn(&["--model", gemma.to_str().unwrap()], &[]);
    let started = std::time::Instant::now();
    let mut ready = None;
    while started.elapsed() < Duration::from_secs(30) && ready.is_none() {
        // Any answer means the HTTP server (and the signal handler, spawned before it) runs.
        match client().get(server.url("/ready")).timeout(Duration::from_secs(1)).send().await {
            Ok(resp) => ready = Some(resp.status().as_u16()),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    let ready = ready.expect("the server never answered");
    server.sigterm();
    let signalled = std::time::Instant::now();
    let status = server.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    eprintln!("SIGTERM with /ready = {ready} (503: still loading): exit {status} after {took:?}");
    assert_eq!(status.code(), Some(0), "{status}");
    // Nothing is in flight: the exit is the drain's bookkeeping, not the rest of the load.
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let server = Server::start(&[], &[(flags::MAX_BATCH_SIZE.env, "1"), (flags::MAX_QUEUE_SIZE.env, "1")]);
    let request = json!({"prompt": "Count to one hundred:", "max_tokens": 120, "ignore_eos": true});
    let sends = (0..6).map(|_| client().post(server.url("/v1/completions")).json(&request).send());
    let responses = futures::future::join_all(sends).await;
    let mut statuses = Vec::new();
    for resp in responses {
        let resp = resp.unwrap();
        let status = resp.status().as_u16();
        if status == 429 {
            assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["type"], "rate_limit_error");
        }
        statuses.push(status);
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429) && statuses.contains(&200), "{statuses:?}");
}

#[tokio::test]
async fn request_timeout_covers_generation_with_504_or_a_final_stream_error() {
    // Shedding off: this is about the engine's own deadline, not refusing work up front.
    let server = Server::start(&["--shed-factor", "0"], &[(flags::REQUEST_TIMEOUT_SECONDS.env, "1")]);
    let request = json!({"prompt": "Write an essay.", "max_tokens": 4000, "ignore_eos": true});
    let (status, body) = post_json(&server.url("/v1/completions"), &request).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "timeout_error");
    let mut streaming = request;
    streaming["stream"] = json!(true);
    let (status, events) = sse(&server.url("/v1/completions"), &streaming).await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{last}");
}

#[tokio::test]
async fn injected_errors_and_delays_show_in_responses_and_metrics() {
    let failing = Server::start(&["--inject-error-rate", "1"], &[]);
    let (status, body) = post_json(&failing.url("/v1/completions"), &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "injected_fault");
    let metrics = client().get(failing.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric_value(&metrics, &format!("{}{{status=\"500\"", metrics::REQUESTS.full)) >= 1.0, "{metrics}");

    let slow = Server::start(&["--inject-ttft-delay-ms", "400"], &[]);
    let (status, _) = post_json(&slow.url("/v1/completions"), &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(status, 200);
    let metrics = client().get(slow.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let ttft_sum = metric_value(&metrics, &format!("{}_sum", metrics::TIME_TO_FIRST_TOKEN.full));
    // The injected delay sits between arrival and the first token, so TTFT includes it.
    assert!(ttft_sum >= 0.4, "TTFT sum {ttft_sum} does not include the injected 400 ms");
}

#[tokio::test]
async fn chunked_prefill_gives_the_same_text_as_one_chunk() {
    let prompt = "The history of the city goes back many centuries, to a time when traders crossed the river \
                  on wooden boats and markets filled the old square every morning with fish, bread, cloth and spices \
                  from distant lands, and the people who lived there told stories about";
    let request = json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": true});
    let whole = Server::start(&[], &[]);
    let (_, one_chunk) = post_json(&whole.url("/v1/completions"), &request).await;
    drop(whole);
    let chunked = Server::start(&["--max-prefill-tokens", "16"], &[]);
    let (_, many_chunks) = post_json(&chunked.url("/v1/completions"), &request).await;
    assert!(one_chunk["usage"]["prompt_tokens"].as_u64().unwrap() > 40, "{one_chunk}");
    assert_eq!(one_chunk["choices"][0]["text"], many_chunks["choices"][0]["text"]);
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_sequence() {
    let server = Server::start(&[], &[]);
    let request = json!({"prompt": "Write a very long story.", "max_tokens": 2000, "ignore_eos": true, "stream": true});
    let resp = client().post(server.url("/v1/completions")).json(&request).send().await.unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.expect("first chunk").unwrap();
    drop(body);
    // The engine notices at its next step; poll the gauges rather than sleeping blindly.
    let mut freed = false;
    for _ in 0..100 {
        let metrics = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metric_value(&metrics, metrics::REQUESTS_RUNNING.full) == 0.0
            && metric_value(&metrics, &format!("{}{{status=\"499\"", metrics::REQUESTS.full)) >= 1.0
        {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the abandoned sequence kept running or was not counted as 499");
}

#[tokio::test]
async fn the_candle_backend_serves_too() {
    // The GPU's code path run on the CPU: candle's matmuls, and with q8_0 the Q4_1 weights
    // requantized on the host and placed on the device.
    for quantize in ["none", "q8_0"] {
        let server = Server::start(&["--backend", "candle", "--device", "cpu", "--quantize", quantize], &[]);
        let (status, body) = post_json(
            &server.url("/v1/completions"),
            &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["choices"][0]["text"].as_str().unwrap().contains("Paris"), "quantize={quantize}: {body}");
    }
}

#[test]
fn invalid_configuration_fails_at_start_with_a_one_line_reason() {
    let bin = env!("CARGO_BIN_EXE_infergate-server");
    let out = Command::new(bin).args(["--model", "/x.gguf", "--max-batch-size", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("max-batch-size"), "{stderr}");

    let out = Command::new(bin).args(["--model", "s3://bucket/model.gguf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid model source"));

    let port = common::free_port().to_string();
    let out = Command::new(bin)
        .args(["--model", "/does/not/exist.gguf", "--port", &port])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_cpu_build_asked_for_cuda_fails_at_start_with_the_reason() {
    let bin = env!("CARGO_BIN_EXE_infergate-server");
    let out = Command::new(bin).args(["--model", "/x.gguf", "--device", "cuda:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--device cuda:1") && stderr.contains("without CUDA"), "{stderr}");
}

/// Lays out a Hugging Face cache (HF_HOME/hub/models--org--repo/...) holding the model.
fn hf_cache_with_model() -> std::path::PathBuf {
    let home = std::env::temp_dir().join(format!("infergate-hf-{}", std::process::id()));
    let repo = home.join("hub/models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF");
    let snapshot = repo.join("snapshots/0123456789abcdef0123456789abcdef01234567");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef0123456789abcdef01234567").unwrap();
    let link = snapshot.join("smollm2-135m-instruct-q4_1.gguf");
    if !link.exists() {
        std::os::unix::fs::symlink(common::model_path(), &link).unwrap();
    }
    home
}

#[tokio::test]
async fn hf_sources_load_from_the_local_hub_cache_offline() {
    let home = hf_cache_with_model();
    let home = home.to_str().unwrap();
    let source = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf";
    let port = common::free_port().to_string();
    let server = Server::start(&["--model", source], &[("HF_HOME", home), ("HF_HUB_OFFLINE", "1")]);
    let models: Value = client().get(server.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct-q4_1");
    let (status, body) = post_json(
        &server.url("/v1/completions"),
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["choices"][0]["text"].as_str().unwrap().contains("Paris"), "{body}");

    let out = Command::new(env!("CARGO_BIN_EXE_infergate-server"))
        .args(["--model", "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/missing.gguf", "--port", &port])
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HF_HUB_OFFLINE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
