//! The gate's HTTP side against stand-in infergate-servers (and a stand-in Prometheus) on
//! loopback: scrapes, probe outcomes, pod health, equal load and the baseline comparison.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use infergate_protocol::metrics;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::analysis::{judge_window, GateWork};
use crate::crd::{AnalysisSpec, MetricsSpec, ProbeSpec, SloSpec, Verdict};
use crate::gate::direct::Direct;
use crate::gate::pods::PodState;
use crate::gate::prometheus::Prometheus;
use crate::gate::promql::query_range_seconds;

/// How the stand-in answers completions.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every n-th request fails with 500 (0: never), the others stream to `[DONE]`.
    FailEvery(u64),
    /// Accepts and never answers (the server's `--inject-hang-rate 1`).
    Hang,
    /// One token, then the body ends without `[DONE]` (a process dying mid-answer).
    Cut,
}

/// Serves completions and counts them the way infergate-server exports them.
struct FakeServer {
    revision: &'static str,
    mode: Mode,
    /// TTFT in seconds: the first event is sent after this long, and the exported histogram
    /// records it.
    ttft: f64,
    served: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

async fn metrics(State(s): State<Arc<FakeServer>>) -> String {
    let ok = s.ok.load(Ordering::SeqCst);
    let failed = s.failed.load(Ordering::SeqCst);
    let (ttft, requests) = (metrics::TIME_TO_FIRST_TOKEN.full, metrics::REQUESTS.full);
    let mut text = format!("# TYPE {ttft} histogram\n");
    // The server's own buckets: the gate reads what the server exports.
    for &le in metrics::TTFT_BUCKETS {
        let count = if s.ttft <= le { ok } else { 0 };
        // Label order varies on purpose.
        text.push_str(&format!("{ttft}_bucket{{revision=\"{}\",le=\"{le}\",model=\"m\"}} {count}\n", s.revision));
    }
    text.push_str(&format!("{ttft}_bucket{{le=\"+Inf\",model=\"m\",revision=\"{}\"}} {ok}\n", s.revision));
    text.push_str(&format!("{requests}{{model=\"m\",revision=\"{}\",status=\"200\"}} {ok}\n", s.revision));
    text.push_str(&format!("{requests}{{status=\"500\",model=\"m\",revision=\"{}\"}} {failed}\n", s.revision));
    text
}

/// Counts a request in flight until dropped (the probe going away included).
struct InFlight(Arc<FakeServer>);

impl InFlight {
    fn new(s: &Arc<FakeServer>) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn completions(State(s): State<Arc<FakeServer>>) -> Response {
    let n = s.served.fetch_add(1, Ordering::SeqCst) + 1;
    let guard = InFlight::new(&s);
    match s.mode {
        Mode::Hang => {
            let _held = guard;
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes")
        }
        Mode::FailEvery(every) if every > 0 && n % every == 0 => {
            tokio::time::sleep(Duration::from_millis(5)).await;
            s.failed.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":{\"message\":\"injected\"}}").into_response()
        }
        mode => {
            tokio::time::sleep(Duration::from_secs_f64(s.ttft)).await;
            let done = if mode == Mode::Cut { "" } else { "data: [DONE]\n\n" };
            if mode != Mode::Cut {
                s.ok.fetch_add(1, Ordering::SeqCst);
            }
            let events = format!("data: {{\"choices\":[{{\"text\":\"hi\"}}]}}\n\n{done}");
            let body = futures::stream::once(async move {
                let _held = guard;
                Ok::<_, std::convert::Infallible>(events)
            });
            ([("content-type", "text/event-stream")], Body::from_stream(body)).into_response()
        }
    }
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

fn fake(revision: &'static str, ttft: f64, mode: Mode) -> FakeServer {
    FakeServer {
        revision,
        mode,
        ttft,
        served: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
    }
}

/// Pod lists per revision: each `list` takes the next one, the last one repeats.
#[derive(Default)]
struct FakePods(Mutex<BTreeMap<String, VecDeque<RevisionPods>>>);

impl FakePods {
    /// Every target ready and steady, one Deployment replica per target.
    fn steady(revisions: &[(&str, &[&Target])]) -> Self {
        let pods = FakePods::default();
        for (revision, targets) in revisions {
            pods.then(revision, ready(targets));
        }
        pods
    }

    /// Adds the next list of `revision`.
    fn then(&self, revision: &str, pods: RevisionPods) {
        self.0.lock().unwrap().entry(revision.to_string()).or_default().push_back(pods);
    }
}

impl PodLister for FakePods {
    async fn list(&self, revision: &str) -> crate::error::Result<RevisionPods> {
        let mut lists = self.0.lock().unwrap();
        let queue =
            lists.get_mut(revision).ok_or_else(|| crate::error::Error::Gate(format!("no pods of {revision}")))?;
        Ok(if queue.len() > 1 { queue.pop_front() } else { queue.front().cloned() }.unwrap_or_default())
    }
}

fn ready(targets: &[&Target]) -> RevisionPods {
    let pods = targets
        .iter()
        .map(|t| PodState {
            name: t.pod.clone(),
            uid: t.pod.clone(),
            restarts: 0,
            target: Some((*t).clone()),
            terminating: false,
        })
        .collect::<Vec<_>>();
    RevisionPods { wanted: pods.len() as i32, pods }
}

fn probe_spec(concurrency: u32, duration_seconds: u32) -> ProbeSpec {
    ProbeSpec {
        concurrency,
        max_tokens: 4,
        prompts: vec!["hello".into()],
        duration_seconds,
        request_timeout_seconds: 1,
    }
}

fn job(probe: ProbeSpec) -> GateJob {
    GateJob {
        namespace: "ml".into(),
        name: "chat".into(),
        work: GateWork::Warmup { revision: "x".into(), seconds: 0 },
        probe,
        metrics: MetricsSpec::default(),
        model: None,
    }
}

fn window(revision: &str, baseline: Option<&str>, seconds: u32) -> WindowWork {
    WindowWork {
        revision: revision.into(),
        baseline: baseline.map(str::to_string),
        started_at: Time(Timestamp::now()),
        seconds,
        candidate_serves_users: false,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One window through the Direct source.
async fn direct_window(pods: &FakePods, probe: ProbeSpec, window: &WindowWork) -> WindowReport {
    let http = http();
    measure_window(&Direct { http: http.clone() }, pods, &http, &job(probe), window, &Restarts::new()).await.0
}

fn slo() -> SloSpec {
    SloSpec { ttft_p95_ms: 500, max_error_rate: 0.05, tpot_p95_ms: None }
}

fn analysis(min_requests: u32) -> AnalysisSpec {
    AnalysisSpec { min_requests, ..AnalysisSpec::default() }
}

#[tokio::test]
async fn a_window_measures_probe_load_from_the_pods_own_metrics() {
    let (slow, _) = serve(fake("new", 0.045, Mode::FailEvery(0))).await;
    let (fast, fast_state) = serve(fake("old", 0.015, Mode::FailEvery(0))).await;
    // Traffic from before the window must not count.
    fast_state.ok.store(1000, Ordering::SeqCst);
    let pods = FakePods::steady(&[("new", &[&slow]), ("old", &[&fast])]);
    let report = direct_window(&pods, probe_spec(2, 1), &window("new", Some("old"), 1)).await;
    assert_eq!((report.problem.as_deref(), report.unhealthy.len()), (None, 0), "{report:?}");
    assert!(report.candidate.requests >= 2.0, "{report:?}");
    assert_eq!(report.candidate.errors, 0.0);
    let p95 = report.candidate.ttft_p95_seconds.unwrap();
    assert!(p95 > 0.04 && p95 <= 0.05, "{p95}");
    let baseline = report.baseline.unwrap();
    assert!(baseline.requests >= 2.0 && baseline.requests < 1000.0, "{baseline:?}");
    assert!(baseline.ttft_p95_seconds.unwrap() <= 0.02);
    // The probe's own view: every request ok, each with a client-side TTFT of at least the
    // server's delay.
    let probe = &report.candidate_probe;
    assert!(probe.ok >= 2 && probe.failed.total() == 0, "{probe:?}");
    assert_eq!(probe.ttfts_seconds.len() as u64, probe.ok);
    assert!(probe.ttfts_seconds.iter().all(|&t| t >= 0.045), "{probe:?}");
    assert!(report.baseline_probe.unwrap().ok >= 2);
}

#[tokio::test]
async fn errors_are_counted_and_unreachable_pods_are_reported() {
    let (erroring, state) = serve(fake("new", 0.015, Mode::FailEvery(2))).await;
    let gone = Target { pod: "gone".into(), base_url: "http://127.0.0.1:1".into() };
    // The API still shows `gone` ready: its scrape failing is the source failing.
    let pods = FakePods::steady(&[("new", &[&erroring, &gone])]);
    let report = direct_window(&pods, probe_spec(2, 1), &window("new", None, 1)).await;
    let probe = &report.candidate_probe;
    assert!(probe.failed.http_status > 0 && probe.failed.transport > 0, "{probe:?}");
    // The server's 500s are counted once (by the server), the refused connections once (by the probe).
    let server_failed = state.failed.load(Ordering::SeqCst) as f64;
    assert_eq!(report.candidate.errors, server_failed + probe.failed.transport as f64, "{report:?}");
    assert!(report.problem.unwrap().contains("gone"));
    assert!(report.unhealthy.is_empty());
}

#[tokio::test]
async fn a_window_where_every_request_fails_is_a_failure() {
    let (broken, _) = serve(fake("new", 0.015, Mode::FailEvery(1))).await;
    let pods = FakePods::steady(&[("new", &[&broken])]);
    let report = direct_window(&pods, probe_spec(2, 1), &window("new", None, 1)).await;
    assert!(report.candidate.requests >= 2.0, "{report:?}");
    assert_eq!(report.candidate.errors, report.candidate.requests);
    assert_eq!(report.candidate.ttft_p95_seconds, None);
    let j = judge_window(&report, &slo(), &analysis(2));
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
}

#[tokio::test]
async fn requests_to_a_hanging_server_count_as_failed() {
    let (hung, state) = serve(fake("new", 0.015, Mode::Hang)).await;
    let pods = FakePods::steady(&[("new", &[&hung])]);
    // Timeout 1 s, window 2 s: each of the 2 workers times out once, and its second request is
    // still within its timeout when the window ends (unfinished, not judged).
    let report = direct_window(&pods, probe_spec(2, 2), &window("new", None, 2)).await;
    let probe = &report.candidate_probe;
    assert_eq!((probe.failed.timed_out, probe.ok), (2, 0), "{probe:?}");
    assert_eq!(probe.unfinished, 2, "{probe:?}");
    // The server counted nothing; the window holds the probe's timeouts as errors.
    assert_eq!(state.ok.load(Ordering::SeqCst) + state.failed.load(Ordering::SeqCst), 0);
    assert_eq!((report.candidate.requests, report.candidate.errors), (2.0, 2.0));
    assert_eq!(judge_window(&report, &slo(), &analysis(2)).verdict, Verdict::Fail);
    // Dropped requests close their connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_cut_stream_counts_as_failed() {
    let (cutting, _) = serve(fake("new", 0.015, Mode::Cut)).await;
    let pods = FakePods::steady(&[("new", &[&cutting])]);
    let report = direct_window(&pods, probe_spec(2, 1), &window("new", None, 1)).await;
    let probe = &report.candidate_probe;
    assert!(probe.failed.cut_stream >= 2 && probe.ok == 0, "{probe:?}");
    // The first token did arrive: its TTFT is kept.
    assert_eq!(probe.ttfts_seconds.len() as u64, probe.failed.cut_stream);
    assert_eq!(report.candidate.errors, probe.failed.cut_stream as f64);
    assert_eq!(judge_window(&report, &slo(), &analysis(2)).verdict, Verdict::Fail);
}

#[tokio::test]
async fn both_revisions_get_the_same_probe_load_per_pod() {
    let (preview, preview_state) = serve(fake("new", 0.05, Mode::FailEvery(0))).await;
    let (active_1, active_1_state) = serve(fake("old", 0.05, Mode::FailEvery(0))).await;
    let (active_2, active_2_state) = serve(fake("old", 0.05, Mode::FailEvery(0))).await;
    let pods = FakePods::steady(&[("new", &[&preview]), ("old", &[&active_1, &active_2])]);
    let report = direct_window(&pods, probe_spec(2, 1), &window("new", Some("old"), 1)).await;
    assert!(report.candidate_probe.ok > 0 && report.baseline_probe.unwrap().ok > 0);
    // One pod per side, each with both probe requests in flight; the second active pod idles.
    assert_eq!(preview_state.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(active_1_state.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(active_2_state.served.load(Ordering::SeqCst), 0);
}

#[test]
fn equal_share_probes_as_many_pods_on_each_side() {
    let t = |pod: &str| Target { pod: pod.into(), base_url: String::new() };
    let (c, b) = (vec![t("c1")], vec![t("b1"), t("b2")]);
    assert_eq!(equal_share(&c, &b), (&c[..], &b[..1]));
    let (c3, b2) = (vec![t("c1"), t("c2"), t("c3")], vec![t("b1"), t("b2")]);
    assert_eq!(equal_share(&c3, &b2), (&c3[..2], &b2[..]));
    // No baseline pods: the candidate is still probed in full.
    assert_eq!(equal_share(&c3, &[]), (&c3[..], &[][..]));
}

#[tokio::test]
async fn a_slower_candidate_is_a_regression_and_an_equal_one_is_not() {
    let spec = AnalysisSpec { max_regression_percent: Some(20.0), ..analysis(5) };
    let (slow, _) = serve(fake("new", 0.3, Mode::FailEvery(0))).await;
    let (fast, _) = serve(fake("old", 0.1, Mode::FailEvery(0))).await;
    let pods = FakePods::steady(&[("new", &[&slow]), ("old", &[&fast])]);
    let report = direct_window(&pods, probe_spec(2, 2), &window("new", Some("old"), 2)).await;
    let j = judge_window(&report, &slo(), &spec);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.message);
    assert!(j.message.contains("regression") && j.message.contains("Mann-Whitney"), "{}", j.message);

    let (same, _) = serve(fake("new", 0.1, Mode::FailEvery(0))).await;
    let (base, _) = serve(fake("old", 0.1, Mode::FailEvery(0))).await;
    let pods = FakePods::steady(&[("new", &[&same]), ("old", &[&base])]);
    let report = direct_window(&pods, probe_spec(2, 2), &window("new", Some("old"), 2)).await;
    let j = judge_window(&report, &slo(), &spec);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.message);
    assert!(j.message.contains("no regression"), "{}", j.message);
}

#[tokio::test]
async fn a_pod_dying_in_the_window_fails_it_and_its_scrape_is_no_measurement_error() {
    // The pod's server is gone (refused), and the API shows it not ready at the window's end.
    let dying = Target { pod: "chat-new-1".into(), base_url: "http://127.0.0.1:1".into() };
    let pods = FakePods::default();
    pods.then("new", ready(&[&dying]));
    let mut not_ready = ready(&[&dying]);
    not_ready.pods[0].target = None;
    not_ready.pods[0].restarts = 1;
    pods.then("new", not_ready);
    let report = direct_window(&pods, probe_spec(1, 1), &window("new", None, 1)).await;
    assert_eq!(report.problem, None, "{report:?}");
    let text = report.unhealthy.join("; ");
    assert!(text.contains("no ready pod at the window's end") && text.contains("chat-new-1 restarted"), "{text}");
    let j = judge_window(&report, &slo(), &analysis(20));
    assert_eq!((j.verdict, j.measurement_error), (Verdict::Fail, false), "{}", j.message);
}

#[tokio::test]
async fn no_ready_pod_fails_only_a_revision_that_wants_pods() {
    let crash_looping = RevisionPods {
        wanted: 1,
        pods: vec![PodState {
            name: "chat-new-1".into(),
            uid: "u".into(),
            restarts: 3,
            target: None,
            terminating: false,
        }],
    };
    let pods = FakePods::default();
    pods.then("new", crash_looping);
    let report = direct_window(&pods, probe_spec(1, 1), &window("new", None, 1)).await;
    assert!(report.unhealthy.iter().any(|u| u.contains("no ready pod")), "{report:?}");
    assert_eq!(judge_window(&report, &slo(), &analysis(20)).verdict, Verdict::Fail);

    let pods = FakePods::default();
    pods.then("new", RevisionPods::default());
    let report = direct_window(&pods, probe_spec(1, 1), &window("new", None, 1)).await;
    assert!(report.unhealthy.is_empty());
    assert!(report.problem.unwrap().contains("no ready pod of revision new"));
}

/// Answers `/api/v1/query` with a fixed value and records the queries.
async fn fake_prometheus(
    State(queries): State<Arc<Mutex<Vec<String>>>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> axum::Json<serde_json::Value> {
    let query = params.get("query").cloned().unwrap_or_default();
    queries.lock().unwrap().push(query.clone());
    let value = if query.starts_with("histogram_quantile") { "0.25" } else { "40" };
    axum::Json(serde_json::json!({"status": "success", "data": {"resultType": "vector",
        "result": [{"metric": {}, "value": [0, value]}]}}))
}

#[tokio::test]
async fn the_prometheus_source_selects_the_resource_over_four_scrape_intervals() {
    let queries = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route("/api/v1/query", get(fake_prometheus)).with_state(queries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (server, _) = serve(fake("new", 0.015, Mode::FailEvery(0))).await;
    let pods = FakePods::steady(&[("new", &[&server])]);
    let http = http();
    let source = Prometheus {
        http: http.clone(),
        base_url: format!("http://{addr}"),
        namespace: "ml".into(),
        name: "chat".into(),
        range_seconds: query_range_seconds(1, 15),
    };
    let (report, _) =
        measure_window(&source, &pods, &http, &job(probe_spec(1, 1)), &window("new", None, 1), &Restarts::new()).await;
    assert_eq!(report.problem, None);
    assert_eq!((report.candidate.requests, report.candidate.ttft_p95_seconds), (40.0, Some(0.25)));
    let asked = queries.lock().unwrap().clone();
    // The window's three queries over the range, and the three gauges of the in-flight load
    // (pods, waiting, running) at its end: 40 + 40 over 40 pods.
    let (windowed, gauges): (Vec<&String>, Vec<&String>) = asked.iter().partition(|q| q.contains("[60s]"));
    assert_eq!((windowed.len(), gauges.len()), (3, 3), "{asked:?}");
    for q in &asked {
        assert!(q.contains(r#"namespace="ml",name="chat",revision="new""#), "{q}");
    }
    assert_eq!(report.candidate_in_flight, Some(2.0));

    // Prometheus down: a measurement error, not a verdict.
    let down = Prometheus { base_url: "http://127.0.0.1:1".into(), ..source };
    let (report, _) =
        measure_window(&down, &pods, &http, &job(probe_spec(1, 1)), &window("new", None, 1), &Restarts::new()).await;
    assert!(report.problem.as_deref().is_some_and(|p| p.starts_with("prometheus:")), "{report:?}");
    let j = judge_window(&report, &slo(), &analysis(20));
    assert_eq!((j.verdict, j.measurement_error), (Verdict::Inconclusive, true), "{}", j.message);
}

#[tokio::test]
async fn probe_load_stops_at_its_deadline_and_at_the_request_cap() {
    let (target, state) = serve(fake("new", 0.015, Mode::FailEvery(0))).await;
    let http = http();
    let probe = ProbeSpec { concurrency: 4, max_tokens: 1, prompts: Vec::new(), ..probe_spec(4, 1) };
    let begun = std::time::Instant::now();
    let plan = ProbeRun::for_duration(std::slice::from_ref(&target), &probe, Some("m"), Duration::from_millis(300));
    let stats = probe::run(&http, &plan).await;
    assert!(begun.elapsed() < Duration::from_secs(2));
    assert!(stats.ok > 0 && stats.failed.total() == 0, "{stats:?}");
    // Requests already on the wire at the deadline may still land; after that, silence.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let served = state.served.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state.served.load(Ordering::SeqCst), served, "nothing is sent after the deadline");
    assert!(stats.sent <= probe::MAX_REQUESTS);
    // Nothing to load: returns at once.
    let idle = ProbeRun::for_duration(&[], &probe, None, Duration::from_secs(60));
    assert_eq!(probe::run(&http, &idle).await, ProbeWindow::default());
}

#[tokio::test]
async fn a_stopped_job_reports_nothing_and_is_not_busy() {
    // The live gate without an apiserver: a warm-up job whose pod listing can only fail.
    let (service, _handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let gate = LiveGate::new(Client::new(service, "ml")).unwrap();
    let work = GateWork::Warmup { revision: "new".into(), seconds: 60 };
    gate.start("ml/chat", GateJob { work, ..job(probe_spec(1, 1)) });
    assert!(gate.observe("ml/chat").busy);
    gate.stop("ml/chat");
    tokio::task::yield_now().await;
    assert_eq!(gate.observe("ml/chat"), GateObservation::default());
}
