//! Reconcile scenarios against a scripted apiserver (tower-test).
//!
//! Each scenario lists the calls the reconcile must make, in order; every call must arrive within
//! a timeout, and any call beyond the script is collected and fails the test. Calls on the
//! InferenceDeployment itself are answered from a [`StoredObject`], as a real apiserver would:
//! writes bump the resourceVersion and a stale conditional status write gets a 409.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use super::mock_store::{StoredObject, INFDS};
use super::status::with_conditions;
use super::{deployment, error_policy, reconcile, Context};
use crate::crd::{InferenceDeployment, InferenceDeploymentSpec, InferenceDeploymentStatus, Phase};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model_source::ModelSource;
use crate::names::LEGACY_FINALIZER;
use crate::revision::revision_of;
use crate::rollout::{self, Observed};
use crate::test_support::{infd, spec, FakeGate, FakeSignals};

mod controls;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// After the script: how long to wait for calls that should not come.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ml/deployments";
const SERVICES: &str = "/api/v1/namespaces/ml/services";
const PDBS: &str = "/apis/policy/v1/namespaces/ml/poddisruptionbudgets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ml/events";

/// How the scripted apiserver answers one call.
enum Reply {
    /// The request body, as an apply or create returns the object (calls on the
    /// InferenceDeployment are answered by its [`StoredObject`]).
    Echo,
    /// The request body with `.status` set (a Deployment the apiserver reports on).
    EchoWithStatus(Value),
    /// A fixed body.
    Json(Value),
    /// An apiserver error with this HTTP code.
    Fail(u16),
}

struct Call {
    method: Method,
    path: String,
    reply: Reply,
}

fn call(method: Method, path: impl Into<String>, reply: Reply) -> Call {
    Call { method, path: path.into(), reply }
}

/// A request as the apiserver saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

struct Outcome {
    result: Result<Action, Error>,
    seen: Vec<Seen>,
    metrics: Arc<Metrics>,
    /// The InferenceDeployment as the apiserver holds it afterwards.
    stored: InferenceDeployment,
}

impl Outcome {
    fn action(&self, what: &str) -> Action {
        match &self.result {
            Ok(action) => action.clone(),
            Err(error) => panic!("{what}: {error}"),
        }
    }

    fn body(&self, method: Method, path: &str) -> &Value {
        &self
            .seen
            .iter()
            .find(|s| s.method == method && s.path == path)
            .unwrap_or_else(|| panic!("no {method} {path} in {:?}", self.paths()))
            .body
    }

    fn paths(&self) -> Vec<String> {
        self.seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect()
    }

    fn event_reasons(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|s| s.path == EVENTS)
            .map(|s| s.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Runs one reconcile of `obj` against the script and returns what happened.
async fn scenario(obj: InferenceDeployment, script: Vec<Call>) -> Outcome {
    scenario_with_gate(obj, script, Arc::new(FakeGate::default())).await
}

async fn scenario_with_gate(obj: InferenceDeployment, script: Vec<Call>, gate: Arc<FakeGate>) -> Outcome {
    scenario_on(StoredObject::new(&obj), obj, script, gate).await
}

/// One reconcile of `obj` (the reconcile's copy) against an apiserver that holds `stored`.
async fn scenario_on(
    stored: StoredObject,
    obj: InferenceDeployment,
    script: Vec<Call>,
    gate: Arc<FakeGate>,
) -> Outcome {
    scenario_with_signals(stored, obj, script, gate, Arc::new(FakeSignals::default())).await
}

/// [`scenario_on`] with the autoscaler reading from `signals`.
async fn scenario_with_signals(
    mut stored: StoredObject,
    obj: InferenceDeployment,
    script: Vec<Call>,
    gate: Arc<FakeGate>,
    signals: Arc<FakeSignals>,
) -> Outcome {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ml");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client, Reporter { controller: "infergate-operator".into(), instance: None }),
        metrics.clone(),
        gate,
        signals,
    ));

    let apiserver = tokio::spawn(async move {
        let mut seen = Vec::new();
        for expected in script {
            let (request, send) = tokio::time::timeout(CALL_TIMEOUT, handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {} {}", expected.method, expected.path))
                .unwrap_or_else(|| panic!("client gone before {} {}", expected.method, expected.path));
            let request = read(request).await;
            assert_eq!(
                (&request.method, request.path.as_str()),
                (&expected.method, expected.path.as_str()),
                "unexpected call (query {:?})",
                request.query
            );
            let own = match expected.reply {
                Reply::Echo => {
                    stored.handle(request.method.as_str(), &request.path, &request.content_type, &request.body)
                }
                _ => None,
            };
            let (code, body) = match expected.reply {
                _ if own.is_some() => own.clone().unwrap_or_default(),
                Reply::Echo => (200, request.body.clone()),
                Reply::EchoWithStatus(status) => {
                    let mut body = request.body.clone();
                    body["status"] = status;
                    (200, body)
                }
                Reply::Json(body) => (200, body),
                Reply::Fail(code) => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "scripted failure", "reason": "InternalError", "code": code}),
                ),
            };
            send.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(code).expect("valid code"))
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response"),
            );
            seen.push(request);
        }
        let mut unexpected = Vec::new();
        while let Ok(Some((request, send))) = tokio::time::timeout(QUIET_PERIOD, handle.next_request()).await {
            unexpected.push(format!("{} {}", request.method(), request.uri()));
            send.send_error("not in the script");
        }
        assert!(unexpected.is_empty(), "calls beyond the script: {unexpected:?}");
        (seen, stored.current())
    });

    let result = reconcile(Arc::new(obj), ctx).await;
    let (seen, stored) = apiserver.await.expect("scripted apiserver");
    Outcome { result, seen, metrics, stored }
}

async fn read(request: Request<Body>) -> Seen {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let content_type =
        request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = request.into_body().collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("json request body") };
    Seen { method, path, query, content_type, body }
}

fn list(items: Vec<Deployment>) -> Reply {
    Reply::Json(json!({
        "apiVersion": "apps/v1",
        "kind": "DeploymentList",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
}

fn ready(n: i32) -> Value {
    json!({ "replicas": n, "readyReplicas": n, "availableReplicas": n })
}

/// A Deployment of `revision` as the apiserver would store it.
fn stored_deployment(
    obj: &InferenceDeployment,
    spec: &InferenceDeploymentSpec,
    revision: &str,
    replicas: i32,
    ready: i32,
) -> Deployment {
    let mut owner = obj.clone();
    owner.spec = spec.clone();
    let model = ModelSource::parse(&spec.model.source).expect("valid source");
    let mut d = deployment::build_deployment(&owner, &model, revision, replicas).expect("deployment");
    d.status =
        Some(DeploymentStatus { replicas: Some(ready), ready_replicas: Some(ready), ..DeploymentStatus::default() });
    d
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn selector_revision(service: &Value) -> &str {
    service["spec"]["selector"]["infergate.dev/revision"].as_str().unwrap_or_default()
}

/// The status the operator writes once `spec`'s revision serves all its replicas.
fn settled(spec: &InferenceDeploymentSpec) -> InferenceDeploymentStatus {
    let rev = revision_of(spec).unwrap();
    let observed =
        Observed { desired: rev.clone(), ready: [(rev.clone(), spec.replicas)].into(), ..Observed::default() };
    let decided = rollout::decide(spec, None, &observed, &now()).status;
    let mut status = with_conditions(&decided, Some(3), spec.replicas, spec.replicas, &now());
    status.selector = Some(crate::names::selector_string("chat", &rev));
    status
}

fn status_path() -> String {
    format!("{INFDS}/chat/status")
}

fn written_status(out: &Outcome) -> &Value {
    &out.body(Method::PATCH, &status_path())["status"]
}

#[tokio::test]
async fn new_resource_gets_its_first_revision_as_active() {
    let obj = infd(spec());
    let rev = revision_of(&obj.spec).unwrap();
    let deployment = format!("{DEPLOYMENTS}/chat-{rev}");
    let out = scenario(
        obj,
        vec![
            call(Method::GET, DEPLOYMENTS, list(vec![])),
            call(Method::PATCH, status_path(), Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::PATCH, &deployment, Reply::EchoWithStatus(ready(0))),
            call(Method::PATCH, format!("{SERVICES}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{SERVICES}/chat-preview"), Reply::Echo),
            call(Method::PATCH, format!("{PDBS}/chat"), Reply::Echo),
        ],
    )
    .await;
    assert_eq!(out.action("reconcile"), Action::requeue(Duration::from_secs(15)));

    let apply = out.seen.iter().find(|s| s.path == deployment).unwrap();
    assert!(apply.query.contains("fieldManager=infergate-operator"), "{}", apply.query);
    assert!(apply.query.contains("force=true"));
    let d = &apply.body;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["ownerReferences"][0]["name"], "chat");
    assert_eq!(d["metadata"]["ownerReferences"][0]["controller"], true);

    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat"))), rev);
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat-preview"))), rev);
    assert_eq!(
        out.body(Method::PATCH, &format!("{PDBS}/chat"))["spec"]["selector"]["matchLabels"]["infergate.dev/revision"],
        rev.as_str()
    );

    let written = out.body(Method::PATCH, &status_path());
    assert_eq!(written["metadata"]["resourceVersion"], "100", "the decision is conditional on the version read");
    let status = &written["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["activeRevision"], rev.as_str());
    assert_eq!(status["observedGeneration"], 3);
    assert!(status.get("previewRevision").is_none());
    assert_eq!(out.event_reasons(), ["RevisionActivated", "PhaseChanged"]);
    assert_eq!(out.stored.resource_version().as_deref(), Some("101"), "the status write bumped the version");
}

#[tokio::test]
async fn changed_template_is_deployed_as_preview_next_to_the_active_revision() {
    let old_spec = spec();
    let old_rev = revision_of(&old_spec).unwrap();
    let mut new_spec = old_spec.clone();
    new_spec.image = "infergate-server:v2".into();
    new_spec.replicas = 3;
    new_spec.rollout.preview_replicas = 1;
    let new_rev = revision_of(&new_spec).unwrap();
    assert_ne!(old_rev, new_rev);

    let mut obj = infd(new_spec);
    obj.status = Some(settled(&old_spec));
    let active = stored_deployment(&obj, &old_spec, &old_rev, 2, 2);

    let out = scenario(
        obj,
        vec![
            call(Method::GET, DEPLOYMENTS, list(vec![active])),
            call(Method::PATCH, status_path(), Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{new_rev}"), Reply::EchoWithStatus(ready(0))),
            call(
                Method::PATCH,
                format!("{DEPLOYMENTS}/chat-{old_rev}"),
                Reply::Json(json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": format!("chat-{old_rev}"), "labels": {"infergate.dev/revision": old_rev}},
                    "status": ready(2),
                })),
            ),
            call(Method::PATCH, format!("{SERVICES}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{SERVICES}/chat-preview"), Reply::Echo),
            call(Method::PATCH, format!("{PDBS}/chat"), Reply::Echo),
        ],
    )
    .await;
    out.action("reconcile");

    let preview = out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{new_rev}"));
    assert_eq!(preview["spec"]["replicas"], 1);
    assert_eq!(preview["spec"]["template"]["spec"]["containers"][0]["image"], "infergate-server:v2");
    // The active revision is only scaled (merge patch), its template untouched.
    assert_eq!(out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{old_rev}")), &json!({"spec": {"replicas": 3}}));
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat"))), old_rev);
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat-preview"))), new_rev);

    let status = written_status(&out);
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["activeRevision"], old_rev.as_str());
    assert_eq!(status["previewRevision"], new_rev.as_str());
    assert_eq!(status["rollout"]["step"], "WaitingForPreview");
    assert_eq!(status["rollout"]["baseline"], old_rev.as_str());
    let reconciling = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Reconciling").unwrap();
    assert_eq!(
        (reconciling["status"].as_str(), reconciling["reason"].as_str()),
        (Some("True"), Some("WaitingForPreview"))
    );
    assert_eq!(out.event_reasons(), ["RolloutStarted", "Scaled", "PhaseChanged"]);
}

#[tokio::test]
async fn reverting_the_spec_removes_the_preview() {
    let active_spec = spec();
    let active_rev = revision_of(&active_spec).unwrap();
    let mut preview_spec = active_spec.clone();
    preview_spec.image = "infergate-server:v2".into();
    let preview_rev = revision_of(&preview_spec).unwrap();

    // Analyzing a preview, then the user puts the old image back.
    let mut obj = infd(active_spec.clone());
    let mut analyzing = settled(&active_spec);
    analyzing.phase = Some(Phase::Analyzing);
    analyzing.preview_revision = Some(preview_rev.clone());
    analyzing.rollout = Some(crate::crd::RolloutState {
        revision: preview_rev.clone(),
        baseline: active_rev.clone(),
        step: crate::crd::RolloutStep::Analyzing,
        started_at: now(),
        step_started_at: now(),
        window_started_at: None,
        message: None,
        result: None,
    });
    obj.status = Some(analyzing);
    let active = stored_deployment(&obj, &active_spec, &active_rev, 2, 2);
    let preview = stored_deployment(&obj, &preview_spec, &preview_rev, 1, 1);

    let out = scenario(
        obj,
        vec![
            call(Method::GET, DEPLOYMENTS, list(vec![active, preview.clone()])),
            call(Method::PATCH, status_path(), Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::POST, EVENTS, Reply::Echo),
            call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{active_rev}"), Reply::EchoWithStatus(ready(2))),
            call(Method::PATCH, format!("{SERVICES}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{SERVICES}/chat-preview"), Reply::Echo),
            call(Method::PATCH, format!("{PDBS}/chat"), Reply::Echo),
            call(
                Method::DELETE,
                format!("{DEPLOYMENTS}/chat-{preview_rev}"),
                Reply::Json(serde_json::to_value(&preview).unwrap()),
            ),
            call(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    out.action("reconcile");
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat-preview"))), active_rev);
    let status = written_status(&out);
    assert_eq!(status["phase"], "Healthy");
    assert!(status.get("previewRevision").is_none(), "{status}");
    assert!(status.get("rollout").is_none(), "{status}");
    assert_eq!(status["history"][0]["result"], "Aborted");
    assert_eq!(out.event_reasons(), ["RolloutSuperseded", "PhaseChanged", "RevisionDeleted"]);
    assert!(out.metrics.render().unwrap().contains(r#"infergate_rollouts_total{result="Aborted"} 1"#));
}

#[tokio::test]
async fn reconciling_a_settled_resource_writes_no_status_and_no_events() {
    let s = spec();
    let rev = revision_of(&s).unwrap();
    let mut obj = infd(s.clone());
    obj.status = Some(settled(&s));
    assert_eq!(obj.status.as_ref().unwrap().phase, Some(Phase::Healthy));
    let current = stored_deployment(&obj, &s, &rev, 2, 2);

    let out = scenario(
        obj,
        vec![
            call(Method::GET, DEPLOYMENTS, list(vec![current])),
            // No status to write: a fresh read confirms this copy is current before the children follow it.
            call(Method::GET, format!("{INFDS}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{rev}"), Reply::EchoWithStatus(ready(2))),
            call(Method::PATCH, format!("{SERVICES}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{SERVICES}/chat-preview"), Reply::Echo),
            call(Method::PATCH, format!("{PDBS}/chat"), Reply::Echo),
        ],
    )
    .await;
    assert_eq!(out.action("reconcile"), Action::requeue(Duration::from_secs(300)));
    assert_eq!(out.stored.resource_version().as_deref(), Some("100"), "nothing was written");
}

#[tokio::test]
async fn a_stale_copy_with_nothing_to_write_applies_no_children() {
    // Our last write (version 101) is not in the watch yet: this copy still says 100.
    let s = spec();
    let rev = revision_of(&s).unwrap();
    let mut obj = infd(s.clone());
    obj.status = Some(settled(&s));
    let mut newer = serde_json::to_value(&obj).unwrap();
    newer["metadata"]["resourceVersion"] = json!("101");
    let current = stored_deployment(&obj, &s, &rev, 2, 2);
    let out = scenario(
        obj,
        vec![
            call(Method::GET, DEPLOYMENTS, list(vec![current])),
            call(Method::GET, format!("{INFDS}/chat"), Reply::Json(newer)),
        ],
    )
    .await;
    assert_eq!(out.action("a stale copy is no error"), Action::requeue(Duration::from_secs(1)));
}

#[tokio::test]
async fn revisions_neither_active_nor_preview_are_deleted() {
    let s = spec();
    let rev = revision_of(&s).unwrap();
    let mut obj = infd(s.clone());
    obj.status = Some(settled(&s));
    let current = stored_deployment(&obj, &s, &rev, 2, 2);
    let mut old_spec = s.clone();
    old_spec.image = "infergate-server:v0".into();
    let leftover = stored_deployment(&obj, &old_spec, "0123456789", 1, 1);
    // A Deployment with our labels but another owner is not ours to delete.
    let mut foreign = stored_deployment(&obj, &old_spec, "aaaaaaaaaa", 1, 1);
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();

    let out = scenario(
        obj,
        vec![
            call(Method::GET, DEPLOYMENTS, list(vec![current, leftover.clone(), foreign])),
            call(Method::GET, format!("{INFDS}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{rev}"), Reply::EchoWithStatus(ready(2))),
            call(Method::PATCH, format!("{SERVICES}/chat"), Reply::Echo),
            call(Method::PATCH, format!("{SERVICES}/chat-preview"), Reply::Echo),
            call(Method::PATCH, format!("{PDBS}/chat"), Reply::Echo),
            call(
                Method::DELETE,
                format!("{DEPLOYMENTS}/chat-0123456789"),
                Reply::Json(serde_json::to_value(&leftover).unwrap()),
            ),
            call(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    out.action("reconcile");
    assert_eq!(out.event_reasons(), ["RevisionDeleted"]);
}

#[tokio::test]
async fn unparseable_model_source_becomes_a_condition_without_touching_children() {
    let mut s = spec();
    s.model.source = "hf://org-only/repo".into();
    let out = scenario(
        infd(s),
        vec![call(Method::PATCH, status_path(), Reply::Echo), call(Method::POST, EVENTS, Reply::Echo)],
    )
    .await;
    assert_eq!(out.action("no error, no retry loop"), Action::await_change());
    let status = written_status(&out);
    assert_eq!(status["phase"], "Degraded");
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap().contains("hf://org/repo[@revision]/file"));
    let event = out.body(Method::POST, EVENTS);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidSpec");
}

#[tokio::test]
async fn the_finalizer_of_an_older_operator_is_removed_with_a_guarded_json_patch() {
    let mut obj = infd(spec());
    obj.metadata.finalizers = Some(vec!["example.com/other".into(), LEGACY_FINALIZER.into()]);
    let out = scenario(obj, vec![call(Method::PATCH, format!("{INFDS}/chat"), Reply::Echo)]).await;
    assert_eq!(out.action("reconcile"), Action::await_change());
    let patch = out.seen.iter().find(|s| s.path == format!("{INFDS}/chat")).unwrap();
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([{"op": "test", "path": "/metadata/finalizers/1", "value": LEGACY_FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/1"}])
    );
    assert_eq!(out.stored.metadata.finalizers, Some(vec!["example.com/other".to_string()]));
}

#[tokio::test]
async fn a_deleted_object_is_forgotten_without_a_call_to_the_apiserver() {
    let mut obj = infd(spec());
    obj.metadata.deletion_timestamp = Some(now());
    let gate = Arc::new(FakeGate::default());
    let out = scenario_with_gate(obj, vec![], gate.clone()).await;
    assert_eq!(out.action("deletion"), Action::await_change());
    assert_eq!(gate.stopped.lock().unwrap().as_slice(), ["ml/chat"]);
}

#[tokio::test]
async fn apiserver_failures_are_errors_counted_by_kind() {
    let obj = infd(spec());
    let out = scenario(obj.clone(), vec![call(Method::GET, DEPLOYMENTS, Reply::Fail(500))]).await;
    let error = out.result.expect_err("a failed list fails the reconcile");
    assert_eq!(error.metric_label(), "kube_api");

    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ml");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client, Reporter { controller: "t".into(), instance: None }),
        out.metrics.clone(),
        Arc::new(FakeGate::default()),
        Arc::new(FakeSignals::default()),
    ));
    assert_eq!(error_policy(Arc::new(obj), &error, ctx), Action::requeue(Duration::from_secs(10)));
    assert!(out.metrics.render().unwrap().contains(r#"infergate_reconcile_errors_total{error="kube_api"} 1"#));
}

// ---- rollouts ------------------------------------------------------------------------------

fn listed(existing: Vec<Deployment>) -> Vec<Call> {
    vec![call(Method::GET, DEPLOYMENTS, list(existing))]
}

fn status_written() -> Vec<Call> {
    vec![call(Method::PATCH, status_path(), Reply::Echo)]
}

/// The Services and the PDB of one apply round.
fn routing() -> Vec<Call> {
    vec![
        call(Method::PATCH, format!("{SERVICES}/chat"), Reply::Echo),
        call(Method::PATCH, format!("{SERVICES}/chat-preview"), Reply::Echo),
        call(Method::PATCH, format!("{PDBS}/chat"), Reply::Echo),
    ]
}

fn desired_applied(desired_revision: &str, ready_pods: i32) -> Call {
    call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{desired_revision}"), Reply::EchoWithStatus(ready(ready_pods)))
}

/// The children of one apply round mid-rollout: the desired revision's Deployment (answering with
/// `ready` ready pods), both Services and the PDB.
fn children(desired_revision: &str, ready_pods: i32) -> Vec<Call> {
    script(vec![vec![desired_applied(desired_revision, ready_pods)], routing()])
}

/// `children` of a round in which the desired revision loses pods (rolled back or aborted): the
/// Services move away from it first, its Deployment is scaled down after them.
fn children_shrinking(desired_revision: &str) -> Vec<Call> {
    script(vec![routing(), vec![desired_applied(desired_revision, 0)]])
}

fn events(n: usize) -> Vec<Call> {
    (0..n).map(|_| call(Method::POST, EVENTS, Reply::Echo)).collect()
}

fn controls_cleared() -> Vec<Call> {
    vec![call(Method::PATCH, format!("{INFDS}/chat"), Reply::Echo)]
}

/// The `chat` Service was applied before the Deployment of `revision`, which loses pods: no
/// moment in which the Service selects only pods that are going away.
fn assert_routed_before_scaled_down(out: &Outcome, revision: &str) {
    let at = |path: String| out.seen.iter().position(|s| s.method == Method::PATCH && s.path == path);
    let (routed, scaled) = (at(format!("{SERVICES}/chat")), at(format!("{DEPLOYMENTS}/chat-{revision}")));
    assert!(routed.is_some() && routed < scaled, "{:?}", out.paths());
}

fn script(parts: Vec<Vec<Call>>) -> Vec<Call> {
    parts.into_iter().flatten().collect()
}

/// An object mid-rollout: OLD active (2 ready), NEW analysed as preview (1 ready) with a window
/// opened 40 s ago.
struct MidRollout {
    obj: InferenceDeployment,
    old_rev: String,
    new_rev: String,
    window: Time,
    existing: Vec<Deployment>,
}

fn seconds_ago(s: i64) -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second() - s).unwrap())
}

fn mid_rollout() -> MidRollout {
    let old_spec = spec();
    let old_rev = revision_of(&old_spec).unwrap();
    let mut new_spec = old_spec.clone();
    new_spec.image = "infergate-server:v2".into();
    new_spec.rollout.analysis.failure_limit = 0;
    let new_rev = revision_of(&new_spec).unwrap();
    let window = seconds_ago(40);
    let mut obj = infd(new_spec.clone());
    obj.status = Some(InferenceDeploymentStatus {
        phase: Some(Phase::Analyzing),
        active_revision: Some(old_rev.clone()),
        preview_revision: Some(new_rev.clone()),
        desired_revision: Some(new_rev.clone()),
        rollout: Some(crate::crd::RolloutState {
            revision: new_rev.clone(),
            baseline: old_rev.clone(),
            step: crate::crd::RolloutStep::Analyzing,
            started_at: seconds_ago(100),
            step_started_at: seconds_ago(60),
            window_started_at: Some(window.clone()),
            message: None,
            result: None,
        }),
        analysis: Some(crate::crd::AnalysisStatus {
            revision: new_rev.clone(),
            successful_checks: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    let existing =
        vec![stored_deployment(&obj, &old_spec, &old_rev, 2, 2), stored_deployment(&obj, &new_spec, &new_rev, 1, 1)];
    MidRollout { obj, old_rev, new_rev, window, existing }
}

#[tokio::test]
async fn slow_ttft_rolls_back_scales_the_preview_to_zero_and_counts_it() {
    let m = mid_rollout();
    let report = crate::rollout::WindowReport::of(
        &m.new_rev,
        m.window.clone(),
        crate::analysis::Sample { requests: 100.0, errors: 0.0, ttft_p95_seconds: Some(2.0) },
    );
    let gate = Arc::new(FakeGate::with_report(report));
    let out = scenario_with_gate(
        m.obj,
        script(vec![listed(m.existing), status_written(), events(2), children_shrinking(&m.new_rev)]),
        gate.clone(),
    )
    .await;
    assert_eq!(out.action("reconcile"), Action::requeue(Duration::from_secs(300)));
    assert_routed_before_scaled_down(&out, &m.new_rev);
    // The failed revision is scaled to zero at once; the active one is not touched at all.
    assert_eq!(out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{}", m.new_rev))["spec"]["replicas"], 0);
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat"))), m.old_rev);
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat-preview"))), m.old_rev);

    let status = written_status(&out);
    assert_eq!(status["phase"], "RolledBack");
    assert_eq!(status["failedRevision"], m.new_rev.as_str());
    assert!(status.get("previewRevision").is_none() && status.get("rollout").is_none(), "{status}");
    assert_eq!(status["lastMeasurement"]["ttftP95Ms"], 2000.0);
    assert_eq!(status["lastMeasurement"]["verdict"], "Fail");
    assert_eq!(status["history"][0]["result"], "RolledBack");
    let condition = |kind: &str| status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap();
    assert_eq!(condition("RolledBack")["status"], "True");
    assert!(condition("RolledBack")["message"].as_str().unwrap().contains("P95 TTFT"));
    // GitOps tools read the resource as not ready and failed, not as healthy.
    assert_eq!(
        (condition("Ready")["status"].as_str(), condition("Ready")["reason"].as_str()),
        (Some("False"), Some("RolledBack"))
    );
    assert_eq!(
        (condition("Stalled")["status"].as_str(), condition("Stalled")["reason"].as_str()),
        (Some("True"), Some("RolledBack"))
    );
    assert_eq!(condition("Reconciling")["status"], "False");
    assert!(status["conditions"].as_array().unwrap().iter().all(|c| c["observedGeneration"] == 3));

    assert_eq!(out.event_reasons(), ["RolledBack", "PhaseChanged"]);
    assert_eq!(out.body(Method::POST, EVENTS)["type"], "Warning");
    assert_eq!(gate.stopped.lock().unwrap().as_slice(), ["ml/chat"]);
    let metrics = out.metrics.render().unwrap();
    assert!(metrics.contains(r#"infergate_rollouts_total{result="RolledBack"} 1"#), "{metrics}");
    assert!(metrics.contains(&format!(
        r#"infergate_gate_ttft_p95_seconds{{name="chat",namespace="ml",revision="{}"}} 2"#,
        m.new_rev
    )));
}

#[tokio::test]
async fn after_an_operator_restart_the_analysis_continues_with_a_fresh_window() {
    let m = mid_rollout();
    let gate = Arc::new(FakeGate::default());
    let out = scenario_with_gate(
        m.obj,
        script(vec![listed(m.existing), status_written(), children(&m.new_rev, 1)]),
        gate.clone(),
    )
    .await;
    assert_eq!(out.action("reconcile"), Action::requeue(Duration::from_secs(15)));
    let status = written_status(&out);
    assert_eq!(status["phase"], "Analyzing");
    assert_eq!(status["analysis"]["successfulChecks"], 1, "counts survive the restart");
    let new_window: Time = serde_json::from_value(status["rollout"]["windowStartedAt"].clone()).unwrap();
    assert!(new_window.0 > m.window.0);
    let started = gate.started.lock().unwrap();
    assert_eq!(started.len(), 1);
    let (key, job) = &started[0];
    assert_eq!(key, "ml/chat");
    assert_eq!(
        job.work,
        crate::analysis::GateWork::Measure(crate::analysis::WindowWork {
            revision: m.new_rev.clone(),
            baseline: None,
            started_at: new_window,
            seconds: 30,
            candidate_serves_users: false,
        })
    );
}

#[tokio::test]
async fn a_decision_from_a_stale_copy_conflicts_and_touches_no_child() {
    let m = mid_rollout();
    let report = crate::rollout::WindowReport::of(
        &m.new_rev,
        m.window.clone(),
        crate::analysis::Sample { requests: 100.0, errors: 0.0, ttft_p95_seconds: Some(2.0) },
    );
    let gate = Arc::new(FakeGate::with_report(report));
    // The apiserver holds a newer version than the copy the reconcile works from.
    let mut stale = m.obj.clone();
    stale.metadata.resource_version = Some("99".into());
    let out =
        scenario_on(StoredObject::new(&m.obj), stale, script(vec![listed(m.existing), status_written()]), gate.clone())
            .await;
    assert_eq!(out.action("a conflict is no error"), Action::requeue(Duration::from_secs(1)));
    assert_eq!(out.body(Method::PATCH, &status_path())["metadata"]["resourceVersion"], "99");
    assert_eq!(out.stored.status, m.obj.status, "nothing was saved");
    assert!(gate.stopped.lock().unwrap().is_empty() && gate.started.lock().unwrap().is_empty());
}

/// `m` moved on to `step`, with NEW active from Watching on.
fn at_step(m: &mut MidRollout, step: crate::crd::RolloutStep) {
    let status = m.obj.status.as_mut().unwrap();
    let rollout = status.rollout.as_mut().unwrap();
    rollout.step = step;
    if matches!(step, crate::crd::RolloutStep::Watching) {
        status.active_revision = Some(m.new_rev.clone());
        status.preview_revision = None;
        status.phase = Some(Phase::Promoting);
    }
}

/// A promotion whose new revision already runs the active replica count (2), ready.
fn promoting_with_the_new_revision_scaled_up() -> MidRollout {
    let mut m = mid_rollout();
    at_step(&mut m, crate::crd::RolloutStep::ScalingUp);
    m.obj.status.as_mut().unwrap().phase = Some(Phase::Promoting);
    let mut spec_v2 = m.obj.spec.clone();
    spec_v2.replicas = 2;
    m.existing[1] = stored_deployment(&m.obj, &spec_v2, &m.new_rev, 2, 2);
    m
}

/// The Events explain the saved status, so they go out right after it: an apply that fails
/// afterwards (retried from the saved status, which then decides nothing new) loses none.
#[tokio::test]
async fn events_are_published_before_a_failing_apply_of_the_children() {
    let m = promoting_with_the_new_revision_scaled_up();
    let failing = call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{}", m.new_rev), Reply::Fail(500));
    let out = scenario(m.obj, script(vec![listed(m.existing), status_written(), events(1), vec![failing]])).await;
    assert!(out.result.is_err(), "the failed apply fails the reconcile");
    assert_eq!(written_status(&out)["rollout"]["step"], "Watching");
    assert_eq!(out.event_reasons(), ["Promoted"]);
}

#[tokio::test]
async fn promotion_switches_the_active_service_once_the_new_revision_is_scaled_up() {
    let m = promoting_with_the_new_revision_scaled_up();
    let out =
        scenario(m.obj, script(vec![listed(m.existing), status_written(), events(1), children(&m.new_rev, 2)])).await;
    out.action("reconcile");
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat"))), m.new_rev);
    let status = written_status(&out);
    assert_eq!(status["activeRevision"], m.new_rev.as_str());
    assert_eq!(status["rollout"]["step"], "Watching");
    assert_eq!(status["phase"], "Promoting");
    assert_eq!(out.event_reasons(), ["Promoted"]);
}

#[tokio::test]
async fn a_regression_after_promotion_flips_the_service_back_to_the_warm_revision() {
    let mut m = mid_rollout();
    at_step(&mut m, crate::crd::RolloutStep::Watching);
    let report = crate::rollout::WindowReport::of(
        &m.new_rev,
        m.window.clone(),
        crate::analysis::Sample { requests: 200.0, errors: 20.0, ttft_p95_seconds: Some(0.1) },
    );
    let gate = Arc::new(FakeGate::with_report(report));
    let out = scenario_with_gate(
        m.obj,
        script(vec![listed(m.existing), status_written(), events(2), children_shrinking(&m.new_rev)]),
        gate.clone(),
    )
    .await;
    out.action("reconcile");
    assert_routed_before_scaled_down(&out, &m.new_rev);
    assert_eq!(out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{}", m.new_rev))["spec"]["replicas"], 0);
    assert_eq!(selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat"))), m.old_rev);
    let status = written_status(&out);
    assert_eq!(status["phase"], "RolledBack");
    assert_eq!(status["activeRevision"], m.old_rev.as_str());
    assert_eq!(status["lastMeasurement"]["errorRate"], 0.1);
    assert!(status["history"][0]["reason"].as_str().unwrap().contains("regression after promotion"));
    assert_eq!(out.event_reasons(), ["RolledBack", "PhaseChanged"]);
    assert_eq!(gate.stopped.lock().unwrap().as_slice(), ["ml/chat"]);
}

// ---- autoscaling ---------------------------------------------------------------------------

fn autoscaled(spec: &mut InferenceDeploymentSpec, max: i32) {
    spec.autoscaling = Some(crate::crd::AutoscalingSpec {
        min_replicas: 1,
        max_replicas: max,
        target: crate::crd::AutoscalingTarget {
            queue_depth_per_replica: Some(2.0),
            in_flight_per_replica: None,
            ttft_p95_ms: None,
        },
        scale_up_stabilization_seconds: 0,
        scale_down_stabilization_seconds: 60,
    });
}

fn signals(pods: i32, value: f64) -> Arc<FakeSignals> {
    let fake = FakeSignals::default();
    *fake.reading.lock().unwrap() = crate::autoscale::signal::SignalReading {
        signal: Some(crate::autoscale::decide::Signal { pods, value }),
        failures: Vec::new(),
    };
    Arc::new(fake)
}

#[tokio::test]
async fn a_long_queue_scales_up_through_the_scale_subresource_after_the_children() {
    let mut s = spec();
    autoscaled(&mut s, 4);
    let rev = revision_of(&s).unwrap();
    let mut obj = infd(s.clone());
    obj.status = Some(settled(&s));
    let current = stored_deployment(&obj, &s, &rev, 2, 2);
    // 2 pods with 5 waiting each, target 2: ceil(2 x 2.5) = 5, bounded to maxReplicas 4.
    let fake = signals(2, 5.0);
    let out = scenario_with_signals(
        StoredObject::new(&obj),
        obj,
        script(vec![
            listed(vec![current]),
            status_written(),
            events(1),
            vec![call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{rev}"), Reply::EchoWithStatus(ready(2)))],
            routing(),
            vec![call(Method::PATCH, format!("{INFDS}/chat/scale"), Reply::Echo)],
        ]),
        Arc::new(FakeGate::default()),
        fake.clone(),
    )
    .await;
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].revision.as_str(), asked[0].key.as_str()), (rev.as_str(), "ml/chat"));

    // The children still follow the resource's replicas; the next reconcile applies the new count.
    assert_eq!(out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{rev}"))["spec"]["replicas"], 2);
    let scale = out.seen.iter().find(|c| c.path.ends_with("/scale")).unwrap();
    assert_eq!(scale.body, json!({"spec": {"replicas": 4}}));
    assert!(scale.query.contains("fieldManager=infergate-autoscaler"), "{}", scale.query);
    assert_eq!(out.stored.spec.replicas, 4);

    let written = written_status(&out);
    assert_eq!(written["autoscaling"]["desiredReplicas"], 4);
    assert_eq!(written["autoscaling"]["currentReplicas"], 2);
    assert_eq!(written["autoscaling"]["signalValue"], 5.0);
    assert!(written["autoscaling"]["lastScaleTime"].is_string());
    assert_eq!(written["selector"], format!("infergate.dev/name=chat,infergate.dev/revision={rev}"));
    assert_eq!(out.event_reasons(), ["Autoscaled"]);
    let text = out.metrics.render().unwrap();
    assert!(text.contains(r#"infergate_autoscale_desired_replicas{name="chat",namespace="ml"} 4"#), "{text}");
    assert!(
        text.contains(r#"infergate_autoscale_signal{name="chat",namespace="ml",signal="queueDepthPerReplica"} 5"#),
        "{text}"
    );
    assert_eq!(out.action("reconcile"), Action::requeue(crate::autoscale::AUTOSCALE_INTERVAL));
}

#[tokio::test]
async fn a_signal_within_the_tolerance_writes_no_scale() {
    let mut s = spec();
    autoscaled(&mut s, 4);
    let rev = revision_of(&s).unwrap();
    let mut obj = infd(s.clone());
    obj.status = Some(settled(&s));
    let current = stored_deployment(&obj, &s, &rev, 2, 2);
    // 2.1 per replica against 2: within the HPA's 10 %, the count stays.
    let out = scenario_with_signals(
        StoredObject::new(&obj),
        obj,
        script(vec![
            listed(vec![current]),
            status_written(),
            vec![call(Method::PATCH, format!("{DEPLOYMENTS}/chat-{rev}"), Reply::EchoWithStatus(ready(2)))],
            routing(),
        ]),
        Arc::new(FakeGate::default()),
        signals(2, 2.1),
    )
    .await;
    assert!(!out.paths().iter().any(|p| p.ends_with("/scale")), "{:?}", out.paths());
    assert_eq!(written_status(&out)["autoscaling"]["desiredReplicas"], 2);
    assert!(written_status(&out)["autoscaling"].get("lastScaleTime").is_none());
    assert_eq!(out.stored.spec.replicas, 2);
}
