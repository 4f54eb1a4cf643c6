//! The drill faults on the real binary: a crash after N requests, requests that hang, and a
//! TTFT delay that starts only after N requests.

mod common;

use std::time::{Duration, Instant};

use common::{client, metric_value, post_json, Server};
use infergate_protocol::metrics;
use serde_json::json;

fn small_request() -> serde_json::Value {
    json!({"prompt": "hi", "max_tokens": 2})
}

#[tokio::test]
async fn crash_after_requests_answers_n_then_exits_with_status_1() {
    let mut server = Server::start(&["--inject-crash-after-requests", "3"], &[]);
    for n in 1..=3 {
        let (status, body) = post_json(&server.url("/v1/completions"), &small_request()).await;
        assert_eq!(status, 200, "request {n} of 3 before the crash: {body}");
    }
    // The fourth request is the one that finds the process crashing: no answer at all.
    let fourth = client().post(server.url("/v1/completions")).json(&small_request()).send().await;
    assert!(fourth.is_err(), "the request after the 3rd got an answer: {:?}", fourth.map(|r| r.status()));
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "a crash, not a graceful exit: {status}");
}

#[tokio::test]
async fn hang_rate_one_leaves_requests_unanswered_while_health_answers_and_drain_lets_them_go() {
    let mut server = Server::start(&["--inject-hang-rate", "1", "--drain-timeout-seconds", "120"], &[]);
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let outcome = patient.post(server.url("/v1/completions")).json(&small_request()).send().await;
    let error = outcome.expect_err("a hung request was answered");
    assert!(error.is_timeout(), "expected the client's own timeout, got {error}");

    // A second one stays open in the background while the server keeps answering the rest.
    let held = tokio::spawn({
        let url = server.url("/v1/completions");
        async move { client().post(url).json(&small_request()).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // The engine never sees a hung request.
    assert_eq!(metric_value(&metrics, metrics::REQUESTS_RUNNING.full), Some(0.0), "{metrics}");
    assert!(!held.is_finished(), "the held request was answered");

    // A drain does not wait out its 120 s for requests that will never finish on their own.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}");
    let held = held.await.unwrap();
    assert!(!matches!(held, Ok(200)), "the held request succeeded: {held:?}");
}

#[tokio::test]
async fn ttft_delay_after_requests_is_fast_for_the_first_n_then_slow() {
    const DELAY: Duration = Duration::from_millis(2500);
    let server = Server::start(&["--inject-ttft-delay-ms", "2500", "--inject-ttft-delay-after-requests", "2"], &[]);
    let mut elapsed = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = post_json(&server.url("/v1/completions"), &small_request()).await;
        assert_eq!(status, 200, "{body}");
        elapsed.push(started.elapsed());
    }
    // Generous: two tokens of a 135M model take a fraction of the delay even on a busy machine.
    assert!(elapsed[0] < DELAY && elapsed[1] < DELAY, "the first two were delayed: {elapsed:?}");
    assert!(elapsed[2] >= DELAY, "the third was not delayed: {elapsed:?}");
}
