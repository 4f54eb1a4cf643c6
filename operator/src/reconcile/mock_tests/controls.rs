//! Each control annotation end to end through `reconcile`, over several reconciles against an
//! apiserver that bumps the resourceVersion on every write and refuses stale status writes:
//! the decision is saved before the children follow it, and each control acts exactly once.

use super::*;
use crate::crd::{RolloutState, RolloutStep};
use crate::rollout::{ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RETRY, ANNOTATION_ROLLBACK};

fn annotate(obj: &mut InferenceDeployment, annotation: &str) {
    obj.metadata.annotations.get_or_insert_with(Default::default).insert(annotation.to_string(), "true".to_string());
}

fn annotations(obj: &InferenceDeployment) -> Vec<String> {
    obj.annotations().keys().cloned().collect()
}

fn last_control(obj: &InferenceDeployment) -> Option<String> {
    obj.status.as_ref()?.last_control.as_ref().map(|c| c.annotation.clone())
}

fn step(obj: &InferenceDeployment) -> Option<RolloutStep> {
    obj.status.as_ref()?.rollout.as_ref().map(|r| r.step)
}

/// One reconcile that handles a control: list, save the decision, apply `children`, two
/// events, clear the annotation.
fn handled_control(existing: &[Deployment], children: Vec<Call>) -> Vec<Call> {
    script(vec![listed(existing.to_vec()), status_written(), events(2), children, controls_cleared()])
}

/// The revision the `chat` Service was applied with.
fn service_revision(out: &Outcome) -> &str {
    selector_revision(out.body(Method::PATCH, &format!("{SERVICES}/chat")))
}

/// The replicas the Deployment of `revision` was written with.
fn applied_replicas<'a>(out: &'a Outcome, revision: &str) -> &'a Value {
    &out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{revision}"))["spec"]["replicas"]
}

/// Index of the first call to `path`.
fn position(out: &Outcome, method: Method, path: &str) -> usize {
    out.seen
        .iter()
        .position(|s| s.method == method && s.path == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {:?}", out.paths()))
}

/// The decision is saved first, the children follow it, the annotation goes last.
fn assert_saved_then_applied_then_cleared(out: &Outcome, desired: &str) {
    let saved = position(out, Method::PATCH, &status_path());
    let applied = position(out, Method::PATCH, &format!("{DEPLOYMENTS}/chat-{desired}"));
    let cleared = position(out, Method::PATCH, &format!("{INFDS}/chat"));
    assert!(saved < applied && applied < cleared, "{:?}", out.paths());
    let clear = &out.seen[cleared];
    assert_eq!(clear.content_type, "application/merge-patch+json");
    for key in crate::rollout::CONTROL_ANNOTATIONS {
        assert_eq!(clear.body["metadata"]["annotations"][key], Value::Null, "{key} removed");
    }
}

/// A Deployment of `m` at `replicas` with `ready` ready pods (NEW from the new spec, OLD the old).
fn deployment_of(m: &MidRollout, revision: &str, replicas: i32, ready: i32) -> Deployment {
    let mut spec = m.obj.spec.clone();
    if revision == m.old_rev {
        spec.image = "infergate-server:v1".into();
    }
    stored_deployment(&m.obj, &spec, revision, replicas, ready)
}

/// The reconcile after the annotation is gone: only the record is dropped, nothing else moves.
async fn record_dropped(obj: InferenceDeployment, existing: Vec<Deployment>, desired: &str) -> Outcome {
    let before = obj.status.clone();
    let out = scenario(obj, script(vec![listed(existing), status_written(), children(desired, 0)])).await;
    out.action("the reconcile after the clear");
    assert_eq!(last_control(&out.stored), None, "the record goes with the annotation");
    let mut after = out.stored.status.clone();
    if let (Some(after), Some(before)) = (after.as_mut(), before.as_ref()) {
        after.last_control = before.last_control.clone();
    }
    assert_eq!(after, before, "nothing but the record changed");
    assert!(out.event_reasons().is_empty());
    out
}

#[tokio::test]
async fn promote_during_analysis_acts_once_and_the_record_goes_with_the_annotation() {
    let mut m = mid_rollout();
    annotate(&mut m.obj, ANNOTATION_PROMOTE);
    let out = scenario(m.obj.clone(), handled_control(&m.existing, children(&m.new_rev, 1))).await;
    out.action("promote");
    assert_saved_then_applied_then_cleared(&out, &m.new_rev);
    // Scaled to the serving replicas before it takes traffic.
    assert_eq!(applied_replicas(&out, &m.new_rev), 2);
    assert_eq!(service_revision(&out), m.old_rev);
    assert_eq!(out.event_reasons(), ["ManualPromotion", "PhaseChanged"]);
    let stored = out.stored.clone();
    assert_eq!(step(&stored), Some(RolloutStep::ScalingUp));
    assert_eq!(last_control(&stored).as_deref(), Some(ANNOTATION_PROMOTE));
    assert!(annotations(&stored).is_empty());
    assert_eq!(stored.resource_version().as_deref(), Some("102"), "status, then the annotation: two writes");

    let existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 2, 1)];
    let out = record_dropped(stored, existing, &m.new_rev).await;
    assert_eq!(step(&out.stored), Some(RolloutStep::ScalingUp));
}

#[tokio::test]
async fn a_control_whose_removal_failed_is_only_removed_again() {
    let mut m = mid_rollout();
    annotate(&mut m.obj, ANNOTATION_PROMOTE);
    let out = scenario(
        m.obj.clone(),
        script(vec![
            listed(m.existing.clone()),
            status_written(),
            events(2),
            children(&m.new_rev, 1),
            vec![call(Method::PATCH, format!("{INFDS}/chat"), Reply::Fail(500))],
        ]),
    )
    .await;
    assert!(out.result.is_err(), "the failed removal fails the reconcile");
    let stored = out.stored.clone();
    assert_eq!(annotations(&stored), [ANNOTATION_PROMOTE]);
    assert_eq!(last_control(&stored).as_deref(), Some(ANNOTATION_PROMOTE));
    assert_eq!(step(&stored), Some(RolloutStep::ScalingUp));

    // Annotation and record both present: the removal is issued again and nothing else happens
    // (a second promote in ScalingUp would at least warn ControlIgnored).
    let existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 2, 1)];
    let out = scenario(
        stored,
        script(vec![
            listed(existing.clone()),
            vec![call(Method::GET, format!("{INFDS}/chat"), Reply::Echo)],
            children(&m.new_rev, 1),
            controls_cleared(),
        ]),
    )
    .await;
    out.action("the retried removal");
    assert!(out.event_reasons().is_empty());
    assert!(annotations(&out.stored).is_empty());
    assert_eq!(step(&out.stored), Some(RolloutStep::ScalingUp));
    record_dropped(out.stored.clone(), existing, &m.new_rev).await;
}

#[tokio::test]
async fn abort_during_analysis_keeps_the_active_revision_and_reads_rolled_back() {
    let mut m = mid_rollout();
    annotate(&mut m.obj, ANNOTATION_ABORT);
    let out = scenario(m.obj.clone(), handled_control(&m.existing, children_shrinking(&m.new_rev))).await;
    out.action("abort");
    assert_saved_then_applied_then_cleared(&out, &m.new_rev);
    assert_routed_before_scaled_down(&out, &m.new_rev);
    assert_eq!(applied_replicas(&out, &m.new_rev), 0);
    assert_eq!(service_revision(&out), m.old_rev);
    assert_eq!(out.event_reasons(), ["RolloutAborted", "PhaseChanged"]);
    let status = out.stored.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::RolledBack));
    assert_eq!(status.failed_revision.as_deref(), Some(m.new_rev.as_str()));
    assert_eq!(status.history.last().map(|r| r.result), Some(crate::crd::RolloutResult::Aborted));

    let existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 0, 0)];
    record_dropped(out.stored.clone(), existing, &m.new_rev).await;
}

#[tokio::test]
async fn abort_during_the_watch_flips_the_service_back_to_the_warm_baseline() {
    let mut m = mid_rollout();
    at_step(&mut m, RolloutStep::Watching);
    m.existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 2, 2)];
    annotate(&mut m.obj, ANNOTATION_ABORT);
    let out = scenario(m.obj.clone(), handled_control(&m.existing, children_shrinking(&m.new_rev))).await;
    out.action("abort in the watch");
    assert_saved_then_applied_then_cleared(&out, &m.new_rev);
    assert_routed_before_scaled_down(&out, &m.new_rev);
    assert_eq!(service_revision(&out), m.old_rev);
    assert_eq!(applied_replicas(&out, &m.new_rev), 0);
    let status = out.stored.status.clone().unwrap();
    assert_eq!(status.active_revision.as_deref(), Some(m.old_rev.as_str()));
    assert_eq!(status.failed_revision.as_deref(), Some(m.new_rev.as_str()));
}

#[tokio::test]
async fn abort_during_the_watch_keeps_serving_the_new_revision_until_the_baseline_has_ready_pods() {
    let mut m = mid_rollout();
    at_step(&mut m, RolloutStep::Watching);
    // The baseline lost its pods during the watch.
    m.existing = vec![deployment_of(&m, &m.old_rev, 2, 0), deployment_of(&m, &m.new_rev, 2, 2)];
    annotate(&mut m.obj, ANNOTATION_ABORT);
    let out = scenario(m.obj.clone(), handled_control(&m.existing, children(&m.new_rev, 2))).await;
    out.action("abort in the watch, baseline not ready");
    assert_eq!(service_revision(&out), m.new_rev);
    assert_eq!(applied_replicas(&out, &m.new_rev), 2);
    assert_eq!(out.event_reasons(), ["RollbackWaiting", "PhaseChanged"]);
    assert_eq!(step(&out.stored), Some(RolloutStep::Restoring));

    // Once the baseline's pods are ready it takes the traffic and the new revision goes to zero.
    let existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 2, 2)];
    let out = scenario(
        out.stored.clone(),
        script(vec![listed(existing), status_written(), events(2), children_shrinking(&m.new_rev)]),
    )
    .await;
    out.action("baseline ready");
    assert_routed_before_scaled_down(&out, &m.new_rev);
    assert_eq!(service_revision(&out), m.old_rev);
    assert_eq!(applied_replicas(&out, &m.new_rev), 0);
    let status = out.stored.status.clone().unwrap();
    assert_eq!(status.active_revision.as_deref(), Some(m.old_rev.as_str()));
    assert_eq!(status.failed_revision.as_deref(), Some(m.new_rev.as_str()));
    assert_eq!(status.last_control, None);
    assert!(status.history.last().unwrap().reason.as_deref().unwrap().contains("aborted by annotation"));
    // An abort through Restoring is still an abort.
    assert_eq!(status.history.last().unwrap().result, crate::crd::RolloutResult::Aborted);
    assert_eq!(out.event_reasons(), ["RolloutAborted", "PhaseChanged"]);
}

/// NEW serves after a finished rollout; OLD is the previous revision, kept at zero.
fn promoted(m: &mut MidRollout) {
    let status = m.obj.status.as_mut().unwrap();
    status.rollout = None;
    status.preview_revision = None;
    status.active_revision = Some(m.new_rev.clone());
    status.previous_revision = Some(m.old_rev.clone());
    status.phase = Some(Phase::Healthy);
    m.existing = vec![deployment_of(m, &m.old_rev, 0, 0), deployment_of(m, &m.new_rev, 2, 2)];
}

fn scaled_reply(m: &MidRollout, revision: &str) -> Call {
    call(
        Method::PATCH,
        format!("{DEPLOYMENTS}/chat-{revision}"),
        Reply::Json(serde_json::to_value(deployment_of(m, revision, 2, 0)).unwrap()),
    )
}

/// `children` with a replicas patch of another revision right after the desired one's apply.
fn children_scaling(desired: &str, scaled: Call) -> Vec<Call> {
    let mut calls = children(desired, 2);
    calls.insert(1, scaled);
    calls
}

#[tokio::test]
async fn rollback_after_promotion_then_retry_each_act_once() {
    let mut m = mid_rollout();
    promoted(&mut m);
    annotate(&mut m.obj, ANNOTATION_ROLLBACK);
    // Rollback: OLD scales up first while NEW keeps serving.
    let out = scenario(
        m.obj.clone(),
        script(vec![
            listed(m.existing.clone()),
            status_written(),
            events(2),
            children_scaling(&m.new_rev, scaled_reply(&m, &m.old_rev)),
            controls_cleared(),
        ]),
    )
    .await;
    out.action("rollback");
    assert_eq!(
        out.body(Method::PATCH, &format!("{DEPLOYMENTS}/chat-{}", m.old_rev)),
        &json!({"spec": {"replicas": 2}})
    );
    assert_eq!(service_revision(&out), m.new_rev);
    assert_eq!(out.event_reasons(), ["RestoreStarted", "PhaseChanged"]);
    assert_eq!(step(&out.stored), Some(RolloutStep::Restoring));

    // OLD ready: it takes traffic back; the spec still names NEW, which is marked failed.
    let existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 2, 2)];
    let out = scenario(
        out.stored.clone(),
        script(vec![listed(existing), status_written(), events(2), children_shrinking(&m.new_rev)]),
    )
    .await;
    out.action("restored");
    assert_routed_before_scaled_down(&out, &m.new_rev);
    assert_eq!(service_revision(&out), m.old_rev);
    let status = out.stored.status.clone().unwrap();
    assert_eq!(status.failed_revision.as_deref(), Some(m.new_rev.as_str()));
    assert_eq!(status.last_control, None);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "RolledBack"));

    // Retry: NEW is rolled out again as a preview next to OLD, without a spec change.
    let mut obj = out.stored.clone();
    annotate(&mut obj, ANNOTATION_RETRY);
    let existing = vec![deployment_of(&m, &m.old_rev, 2, 2), deployment_of(&m, &m.new_rev, 0, 0)];
    let out = scenario(
        obj,
        script(vec![
            listed(existing.clone()),
            status_written(),
            events(3),
            children(&m.new_rev, 0),
            controls_cleared(),
        ]),
    )
    .await;
    out.action("retry");
    assert_saved_then_applied_then_cleared(&out, &m.new_rev);
    assert_eq!(applied_replicas(&out, &m.new_rev), 1);
    assert_eq!(out.event_reasons(), ["RetryRequested", "RolloutStarted", "PhaseChanged"]);
    let status = out.stored.status.clone().unwrap();
    assert_eq!(status.failed_revision, None);
    assert_eq!(step(&out.stored), Some(RolloutStep::WaitingForPreview));
    assert_eq!(status.rollout.as_ref().map(|r| r.baseline.clone()), Some(m.old_rev.clone()));
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.status, "False");

    record_dropped(out.stored.clone(), existing, &m.new_rev).await;
}

#[tokio::test]
async fn without_auto_promote_a_promote_at_awaiting_promotion_promotes() {
    let mut m = mid_rollout();
    m.obj.spec.rollout.auto_promote = false;
    let status = m.obj.status.as_mut().unwrap();
    status.phase = Some(Phase::Paused);
    if let Some(RolloutState { step, window_started_at, .. }) = status.rollout.as_mut() {
        *step = RolloutStep::AwaitingPromotion;
        *window_started_at = None;
    }
    annotate(&mut m.obj, ANNOTATION_PROMOTE);
    let existing = m.existing.clone();
    let out = scenario(
        m.obj.clone(),
        script(vec![listed(existing), status_written(), events(2), children(&m.new_rev, 1), controls_cleared()]),
    )
    .await;
    out.action("promote");
    assert_eq!(out.event_reasons(), ["ManualPromotion", "PhaseChanged"]);
    assert_eq!(step(&out.stored), Some(RolloutStep::ScalingUp));
    assert_eq!(applied_replicas(&out, &m.new_rev), 2);
}
