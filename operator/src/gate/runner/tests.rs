//! The gate's HTTP side against a stand-in infergate-server on loopback: scrape, probe, deltas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::*;
use crate::crd::{MetricsSpec, ProbeSpec};

/// Serves completions with a fixed TTFT and counts them the way infergate-server exports them.
struct FakeServer {
    revision: &'static str,
    /// Every n-th request fails with 500 (0: never).
    fail_every: u64,
    /// Observed TTFT of every request, in seconds.
    ttft: f64,
    served: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

const BOUNDS: [f64; 8] = [0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.5, 1.0];

async fn metrics(State(s): State<Arc<FakeServer>>) -> String {
    let ok = s.ok.load(Ordering::SeqCst);
    let failed = s.failed.load(Ordering::SeqCst);
    let total = ok + failed;
    let mut text = String::from("# TYPE infergate_time_to_first_token_seconds histogram\n");
    for le in BOUNDS {
        let count = if s.ttft <= le { total } else { 0 };
        // Label order varies on purpose.
        text.push_str(&format!(
            "infergate_time_to_first_token_seconds_bucket{{revision=\"{}\",le=\"{le}\",model=\"m\"}} {count}\n",
            s.revision
        ));
    }
    text.push_str(&format!(
        "infergate_time_to_first_token_seconds_bucket{{le=\"+Inf\",model=\"m\",revision=\"{}\"}} {total}\n",
        s.revision
    ));
    text.push_str(&format!(
        "infergate_requests_total{{model=\"m\",revision=\"{}\",status=\"200\"}} {ok}\n",
        s.revision
    ));
    text.push_str(&format!(
        "infergate_requests_total{{status=\"500\",model=\"m\",revision=\"{}\"}} {failed}\n",
        s.revision
    ));
    text
}

async fn completions(State(s): State<Arc<FakeServer>>) -> Response {
    let n = s.served.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    if s.fail_every > 0 && n % s.fail_every == 0 {
        s.failed.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":{\"message\":\"injected\"}}").into_response();
    }
    s.ok.fetch_add(1, Ordering::SeqCst);
    let body = "data: {\"choices\":[{\"text\":\"hi\"}]}\n\ndata: [DONE]\n\n";
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn serve(server: FakeServer) -> (Target, Arc<FakeServer>) {
    let state = Arc::new(server);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/completions", post(completions))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Target { pod: format!("pod-{}", addr.port()), base_url: format!("http://{addr}") }, state)
}

fn fake(revision: &'static str, ttft: f64, fail_every: u64) -> FakeServer {
    FakeServer {
        revision,
        fail_every,
        ttft,
        served: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    }
}

fn job() -> GateJob {
    GateJob {
        namespace: "ml".into(),
        name: "chat".into(),
        kind: JobKind::Warmup { revision: "x".into(), seconds: 0 },
        probe: ProbeSpec { concurrency: 2, max_tokens: 4, prompts: vec!["hello".into()], duration_seconds: 1 },
        metrics: MetricsSpec::default(),
        model: None,
    }
}

#[tokio::test]
async fn a_window_measures_probe_load_from_the_pods_own_metrics() {
    let (slow, _) = serve(fake("new", 0.045, 0)).await;
    let (fast, fast_state) = serve(fake("old", 0.015, 0)).await;
    // Traffic from before the window must not count.
    fast_state.ok.store(1000, Ordering::SeqCst);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Time(Timestamp::now());
    let report = measure_window(
        &http,
        &job(),
        ("new", std::slice::from_ref(&slow)),
        Some(("old", std::slice::from_ref(&fast))),
        &started,
        1,
    )
    .await;
    assert_eq!(report.problem, None);
    assert!(report.candidate.requests >= 2.0, "{report:?}");
    assert_eq!(report.candidate.errors, 0.0);
    let p95 = report.candidate.ttft_p95_seconds.unwrap();
    assert!(p95 > 0.04 && p95 <= 0.05, "{p95}");
    let baseline = report.baseline.unwrap();
    assert!(baseline.requests >= 2.0 && baseline.requests < 1000.0, "{baseline:?}");
    assert!(baseline.ttft_p95_seconds.unwrap() <= 0.02);
}

#[tokio::test]
async fn errors_are_counted_and_unreachable_pods_are_reported() {
    let (erroring, state) = serve(fake("new", 0.015, 2)).await;
    let gone = Target { pod: "gone".into(), base_url: "http://127.0.0.1:1".into() };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let report = measure_window(&http, &job(), ("new", &[erroring, gone]), None, &Time(Timestamp::now()), 1).await;
    let served = state.served.load(Ordering::SeqCst) as f64;
    assert!(report.candidate.requests >= 2.0);
    let rate = report.candidate.error_rate().unwrap();
    assert!((0.3..=0.7).contains(&rate), "{rate} of {served}");
    assert!(report.problem.unwrap().contains("gone"));
}

#[tokio::test]
async fn probe_load_stops_at_its_deadline_and_at_the_request_cap() {
    let (target, state) = serve(fake("new", 0.015, 0)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let probe = ProbeSpec { concurrency: 4, max_tokens: 1, prompts: Vec::new(), duration_seconds: 1 };
    let begun = std::time::Instant::now();
    let stats = probe::run(&http, std::slice::from_ref(&target), &probe, Some("m"), Duration::from_millis(300)).await;
    assert!(begun.elapsed() < Duration::from_secs(2));
    assert!(stats.completed > 0 && stats.failed == 0, "{stats:?}");
    // Requests already on the wire at the deadline may still land; after that, silence.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let served = state.served.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state.served.load(Ordering::SeqCst), served, "nothing is sent after the deadline");
    assert!(stats.sent <= probe::MAX_REQUESTS);
    // Nothing to load: returns at once.
    assert_eq!(probe::run(&http, &[], &probe, None, Duration::from_secs(60)).await, probe::ProbeStats::default());
}

#[tokio::test]
async fn a_stopped_job_reports_nothing_and_is_not_busy() {
    // The live gate without an apiserver: a warm-up job whose pod listing can only fail.
    let (service, _handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let gate = LiveGate::new(Client::new(service, "ml")).unwrap();
    gate.start("ml/chat", GateJob { kind: JobKind::Warmup { revision: "new".into(), seconds: 60 }, ..job() });
    assert!(gate.observe("ml/chat").busy);
    gate.stop("ml/chat");
    tokio::task::yield_now().await;
    assert_eq!(gate.observe("ml/chat"), GateObservation::default());
}
