//! Reconciliation of one InferenceDeployment into its children and status.
//!
//! Pure parts (plan, builders, status, decisions) live in the submodules; this file only talks
//! to the apiserver, in an order that makes each decision hold on a real apiserver:
//!
//! 1. read the Deployments and decide (the rollout state machine);
//! 2. write the status, conditioned on the resourceVersion read: a reconcile that worked from a
//!    stale copy gets a 409 and touches nothing (when the status did not change, a fresh read
//!    of the resourceVersion stands in for that check); the Events that explain it are
//!    published right after, so a failed apply later cannot lose them;
//! 3. apply the children, which follow from the status just written (`plan_revisions`):
//!    revisions that grow or keep their size first, then the Services, then the revisions that
//!    shrink and the stale ones, so a flip of traffic never has the Service select a revision
//!    whose pods are already going away;
//! 4. remove a handled control annotation, recorded in that status, so it acts exactly once;
//! 5. under `spec.autoscaling`, write the autoscaler's decision (recorded in that status too)
//!    through `/scale`; the next reconcile applies it to the children like any `kubectl scale`.

pub mod autoscaling;
pub mod decisions;
pub mod deployment;
pub mod pdb;
pub mod plan;
pub mod service;
pub mod status;
pub mod sweep;

#[cfg(test)]
mod mock_store;
#[cfg(test)]
mod mock_tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::autoscale::{Autoscaler, SignalReader, AUTOSCALER_FIELD_MANAGER, AUTOSCALE_INTERVAL};
use crate::crd::{InferenceDeployment, InferenceDeploymentStatus, Phase};
use crate::error::{Error, Result};
use crate::gate::{Gate, GateJob};
use crate::metrics::Metrics;
use crate::model_source::{ModelSource, SpecError};
use crate::names::{self, FIELD_MANAGER, LABEL_NAME, LABEL_REVISION, LEGACY_FINALIZER};
use crate::revision::revision_of;
use crate::rollout::{self, Action as RolloutAction, Command, Observed, Outcome, CONTROL_ANNOTATIONS};
use decisions::{decisions, Decision};
use plan::{plan_revisions, RevisionPlan};
use status::{invalid_spec_status, with_conditions};
use sweep::Tracked;

/// `namespace/name`: the gate's key for one resource.
pub fn gate_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// While something is in motion, look again soon even without a watch event.
const REQUEUE_BUSY: Duration = Duration::from_secs(15);
/// Periodic resync of a settled resource.
const REQUEUE_SETTLED: Duration = Duration::from_secs(300);
/// Back-off after a failed reconcile.
const REQUEUE_ERROR: Duration = Duration::from_secs(10);
/// A reconcile that worked from a stale copy looks again once the watch caught up.
const REQUEUE_STALE: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Measures revisions: probe load and analysis windows in the background.
    pub gate: Arc<dyn Gate>,
    /// Reads the autoscaling signal and remembers the stabilization windows.
    pub autoscaler: Autoscaler,
    /// Resources with gate jobs or gauges, swept once they are deleted (see [`sweep`]).
    pub tracked: Tracked,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        gate: Arc<dyn Gate>,
        signals: Arc<dyn SignalReader>,
    ) -> Self {
        Self { client, recorder, metrics, gate, autoscaler: Autoscaler::new(signals), tracked: Tracked::default() }
    }

    /// Stops the gate job and drops the gauges of a resource that is gone.
    pub fn forget(&self, key: &str) {
        self.gate.stop(key);
        self.autoscaler.forget(key);
        if let Some((namespace, name)) = sweep::split_key(key) {
            self.metrics.forget(namespace, name);
        }
        self.tracked.remove(key);
    }
}

/// The controller's reconcile function.
pub async fn reconcile(obj: Arc<InferenceDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    ctx.metrics.reconciliations.inc();
    let namespace = obj.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let key = gate_key(&namespace, &obj.name_any());
    if let Some(index) = obj.finalizers().iter().position(|f| f == LEGACY_FINALIZER) {
        // Upgrade path: objects created by an older operator carry a finalizer that would block
        // their deletion once no operator runs. The removal changes the resourceVersion, so this
        // reconcile ends here and the watch brings the object back.
        remove_finalizer(&obj, &ctx, &namespace, index).await?;
        return Ok(Action::await_change());
    }
    if obj.metadata.deletion_timestamp.is_some() {
        // Children go through their owner references; only our memory of it is left to drop.
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    ctx.tracked.insert(&key);
    apply(&obj, &ctx).await
}

/// The controller's error policy: count by kind, retry soon.
pub fn error_policy(obj: Arc<InferenceDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %obj.name_any(), namespace = ?obj.namespace(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_errors.with_label_values(&[error.metric_label()]).inc();
    Action::requeue(REQUEUE_ERROR)
}

async fn apply(obj: &InferenceDeployment, ctx: &Context) -> Result<Action> {
    let name = obj.name_any();
    let namespace = obj.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let old_status = obj.status.as_ref();
    let now = Time(Timestamp::now());

    let model = match ModelSource::parse(&obj.spec.model.source) {
        Ok(model) => model,
        Err(error) => return reject_spec(obj, ctx, &error, &now).await,
    };
    let desired = revision_of(&obj.spec).map_err(|source| Error::Serialize { what: "pod template inputs", source })?;

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = owned_deployments(&deployments, obj).await?;
    let key = gate_key(&namespace, &name);
    let gate = ctx.gate.observe(&key);
    let observed = Observed {
        desired: desired.clone(),
        ready: existing
            .iter()
            .filter_map(|d| Some((revision_label(d)?, ready_replicas(d))))
            .collect::<BTreeMap<_, _>>(),
        report: gate.report,
        gate_busy: gate.busy,
        command: Command::from_annotations(obj.annotations()),
    };
    let outcome = rollout::decide(&obj.spec, old_status, &observed, &now);
    let active_ready =
        outcome.status.active_revision.as_ref().and_then(|active| observed.ready.get(active)).copied().unwrap_or(0);
    let tick = autoscaling::tick(obj, ctx, &namespace, &outcome.status, &now).await;
    let mut new_status =
        with_conditions(&outcome.status, obj.metadata.generation, obj.spec.replicas, active_ready, &now);
    let active = new_status.active_revision.clone().unwrap_or_else(|| desired.clone());
    new_status.selector = Some(names::selector_string(&name, &active));
    new_status.autoscaling = tick.as_ref().map(|t| t.status.clone());

    // The decision is saved before anything follows from it.
    if !save_decision(obj, ctx, old_status, &new_status).await? {
        debug!(%name, %namespace, "stale copy of the object; looking again once the watch caught up");
        return Ok(Action::requeue(REQUEUE_STALE));
    }
    // Gate jobs start only once the window they belong to is recorded in status.
    carry_out(obj, ctx, &namespace, &key, &outcome);
    // The Events explain the saved status: published now, so that a failed apply below (which
    // the next reconcile retries from the saved status, deciding nothing new) cannot lose them.
    let mut events: Vec<Decision> = outcome.events.iter().map(rollout_decision).collect();
    events.extend(decisions(old_status, &new_status, &[]));
    events.extend(tick.as_ref().and_then(|t| t.event.clone()));
    publish(obj, ctx, &events).await;
    ctx.metrics.set_phase(&namespace, &name, new_status.phase);

    let plan = plan_revisions(&obj.spec, &new_status, &desired);
    apply_revisions(obj, &deployments, &model, &plan, &existing, Resize::GrowOrKeep).await?;
    apply_routing(obj, ctx, &namespace, &plan).await?;
    apply_revisions(obj, &deployments, &model, &plan, &existing, Resize::Shrink).await?;
    let deleted = delete_stale_revisions(&deployments, &plan, &existing).await?;
    // Only the deletions are new since the status was saved.
    publish(obj, ctx, &decisions(Some(&new_status), &new_status, &deleted)).await;
    record_autoscale(obj, ctx, &namespace, &key, tick.as_ref());
    // Last: the status records the control as handled, so a failed removal is only retried.
    if outcome.actions.contains(&RolloutAction::ClearControls) {
        clear_controls(obj, ctx, &namespace).await?;
    }
    if let Some(replicas) = tick.as_ref().and_then(|t| t.scale_to) {
        write_scale(obj, ctx, &namespace, replicas).await?;
    }
    info!(%name, %namespace, active = %plan.active, preview = ?plan.preview, phase = ?new_status.phase, "reconciled");

    let next = match (new_status.rollout.is_some(), new_status.phase) {
        (true, _) => outcome.wake_after.map_or(REQUEUE_BUSY, |wake| wake.min(REQUEUE_BUSY)),
        (false, Some(Phase::Healthy | Phase::RolledBack)) => REQUEUE_SETTLED,
        _ => REQUEUE_BUSY,
    };
    // The autoscaler reads its signal on every reconcile; these come at least this often.
    Ok(Action::requeue(if tick.is_some() { next.min(AUTOSCALE_INTERVAL) } else { next }))
}

/// The autoscaler's gauges, or, for a resource no longer autoscaled, their removal.
fn record_autoscale(
    obj: &InferenceDeployment,
    ctx: &Context,
    namespace: &str,
    key: &str,
    tick: Option<&autoscaling::Tick>,
) {
    let name = obj.name_any();
    let signal = obj.spec.autoscaling.as_ref().and_then(|a| crate::autoscale::target_of(&a.target));
    match (tick, signal) {
        (Some(tick), Some((signal, _))) => ctx.metrics.record_autoscale(
            namespace,
            &name,
            signal,
            tick.status.desired_replicas,
            tick.status.signal_value,
        ),
        _ => {
            ctx.metrics.forget_autoscale(namespace, &name);
            ctx.autoscaler.forget(key);
        }
    }
}

/// Writes `spec.replicas` through the `/scale` subresource, as an HPA does, under the
/// autoscaler's own field manager.
async fn write_scale(obj: &InferenceDeployment, ctx: &Context, namespace: &str, replicas: i32) -> Result<()> {
    let api: Api<InferenceDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({ "spec": { "replicas": replicas } });
    let params = PatchParams { field_manager: Some(AUTOSCALER_FIELD_MANAGER.to_string()), ..PatchParams::default() };
    api.patch_scale(&obj.name_any(), &params, &Patch::Merge(&patch)).await?;
    info!(name = %obj.name_any(), %namespace, from = obj.spec.replicas, to = replicas, "autoscaled");
    Ok(())
}

/// Starts and stops gate jobs, and counts what the rollout decided.
fn carry_out(obj: &InferenceDeployment, ctx: &Context, namespace: &str, key: &str, outcome: &Outcome) {
    let name = obj.name_any();
    for action in &outcome.actions {
        match action {
            RolloutAction::Gate(work) => ctx.gate.start(
                key,
                GateJob {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    work: work.clone(),
                    probe: obj.spec.rollout.probe.clone(),
                    metrics: obj.spec.metrics.clone(),
                    model: obj.spec.model.served_name.clone(),
                },
            ),
            RolloutAction::StopGate => ctx.gate.stop(key),
            RolloutAction::Measured(m) => ctx.metrics.record_measurement(namespace, &name, m),
            RolloutAction::Finished(result) => ctx.metrics.rollouts.with_label_values(&[result.as_str()]).inc(),
            RolloutAction::ClearControls => {}
        }
    }
}

fn rollout_decision(event: &rollout::RolloutEvent) -> Decision {
    Decision { warning: event.warning, reason: event.reason, action: "Rollout", note: event.note.clone() }
}

/// Removes the control annotations (a JSON merge patch: null deletes a key).
async fn clear_controls(obj: &InferenceDeployment, ctx: &Context, namespace: &str) -> Result<()> {
    let api: Api<InferenceDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let annotations: serde_json::Map<String, serde_json::Value> =
        CONTROL_ANNOTATIONS.iter().map(|key| (key.to_string(), serde_json::Value::Null)).collect();
    let patch = json!({ "metadata": { "annotations": annotations } });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PatchParams::default() };
    api.patch(&obj.name_any(), &params, &Patch::Merge(&patch)).await?;
    Ok(())
}

/// A spec that cannot be served: say why in status and an Event, touch no children, and wait
/// for the user to change it (no retry loop).
async fn reject_spec(obj: &InferenceDeployment, ctx: &Context, error: &SpecError, now: &Time) -> Result<Action> {
    warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, "invalid spec");
    let old_status = obj.status.as_ref();
    let decided = rollout::hold_for_invalid_spec(old_status);
    let new_status = invalid_spec_status(&decided, obj.metadata.generation, error, now);
    if !save_decision(obj, ctx, old_status, &new_status).await? {
        return Ok(Action::requeue(REQUEUE_STALE));
    }
    publish(obj, ctx, &decisions(old_status, &new_status, &[])).await;
    if let Some(namespace) = obj.namespace() {
        ctx.metrics.set_phase(&namespace, &obj.name_any(), new_status.phase);
    }
    Ok(Action::await_change())
}

/// Removes the finalizer at `index` with a JSON patch whose test makes it remove that one only.
async fn remove_finalizer(obj: &InferenceDeployment, ctx: &Context, namespace: &str, index: usize) -> Result<()> {
    let api: Api<InferenceDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let path = format!("/metadata/finalizers/{index}");
    // The operation list deserializes into kube's JSON patch type, which needs no extra crate.
    let patch = Patch::<()>::Json(
        serde_json::from_value(json!([
            { "op": "test", "path": path, "value": LEGACY_FINALIZER },
            { "op": "remove", "path": path },
        ]))
        .map_err(|source| Error::Serialize { what: "finalizer patch", source })?,
    );
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PatchParams::default() };
    api.patch(&obj.name_any(), &params, &patch).await?;
    info!(name = %obj.name_any(), %namespace, "removed the finalizer of an older operator version");
    Ok(())
}

/// Deployments of this resource (by label, then by controller owner uid).
async fn owned_deployments(api: &Api<Deployment>, obj: &InferenceDeployment) -> Result<Vec<Deployment>> {
    let selector = format!("{LABEL_NAME}={}", obj.name_any());
    let list = api.list(&ListParams::default().labels(&selector)).await?;
    let uid = obj.uid();
    Ok(list
        .items
        .into_iter()
        .filter(|d| d.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref()))
        .collect())
}

fn revision_label(d: &Deployment) -> Option<String> {
    d.labels().get(LABEL_REVISION).cloned()
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn server_side_apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<K>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.patch(name, &apply_params(), &Patch::Apply(object)).await?)
}

/// Which Deployments one pass of `apply_revisions` touches: those the plan gives at least
/// as many replicas as they have (applied before the Services switch), or those it gives
/// fewer (applied after, so pods leave only once no Service selects them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resize {
    GrowOrKeep,
    Shrink,
}

impl Resize {
    /// The pass that applies `planned` replicas to a Deployment that has `current` now (none
    /// when it does not exist yet).
    fn of(current: Option<i32>, planned: i32) -> Resize {
        match current {
            Some(current) if planned < current => Resize::Shrink,
            _ => Resize::GrowOrKeep,
        }
    }
}

/// For the Deployments of pass `pass`: the desired revision gets its full Deployment applied;
/// other kept revisions were built from an older spec, which this reconcile no longer has, so
/// they only get their replicas set, and only when those differ.
async fn apply_revisions(
    obj: &InferenceDeployment,
    api: &Api<Deployment>,
    model: &ModelSource,
    plan: &RevisionPlan,
    existing: &[Deployment],
    pass: Resize,
) -> Result<()> {
    let name = obj.name_any();
    let current_replicas = |revision: &str| {
        existing
            .iter()
            .find(|d| revision_label(d).as_deref() == Some(revision))
            .map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
    };
    // The desired revision first, as a fresh rollout creates it before anything else.
    let desired_first = plan.replicas.get_key_value(&plan.desired).into_iter();
    let others = plan.replicas.iter().filter(|(revision, _)| **revision != plan.desired);
    for (revision, replicas) in desired_first.chain(others) {
        let current = current_replicas(revision);
        if Resize::of(current, *replicas) != pass {
            continue;
        }
        let deployment_name = names::deployment_name(&name, revision);
        if *revision == plan.desired {
            let desired = deployment::build_deployment(obj, model, &plan.desired, *replicas)?;
            server_side_apply(api, &deployment_name, &desired).await?;
        } else if current != Some(*replicas) {
            let patch = json!({ "spec": { "replicas": replicas } });
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PatchParams::default() };
            api.patch(&deployment_name, &params, &Patch::Merge(&patch)).await?;
        }
    }
    Ok(())
}

/// Services and the PodDisruptionBudget follow the plan's active and preview revisions.
async fn apply_routing(obj: &InferenceDeployment, ctx: &Context, namespace: &str, plan: &RevisionPlan) -> Result<()> {
    let name = obj.name_any();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let active = service::build_service(obj, names::active_service_name(&name), &plan.active)?;
    server_side_apply(&services, &names::active_service_name(&name), &active).await?;
    let preview = service::build_service(obj, names::preview_service_name(&name), plan.preview_target())?;
    server_side_apply(&services, &names::preview_service_name(&name), &preview).await?;

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), namespace);
    let budget = pdb::build_pdb(obj, &plan.active)?;
    server_side_apply(&pdbs, &names::pdb_name(&name), &budget).await?;
    Ok(())
}

/// Deletes the Deployments of revisions the plan no longer keeps; returns their revisions.
async fn delete_stale_revisions(
    api: &Api<Deployment>,
    plan: &RevisionPlan,
    existing: &[Deployment],
) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for d in existing {
        let Some(revision) = revision_label(d) else {
            continue;
        };
        if plan.replicas.contains_key(&revision) {
            continue;
        }
        match api.delete(&d.name_any(), &DeleteParams::background()).await {
            Ok(_) => deleted.push(revision),
            // Already gone: the goal is reached.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(deleted)
}

fn ready_replicas(d: &Deployment) -> i32 {
    d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// Saves the decision: server-side applies the status subresource when it changed, conditioned
/// on the resourceVersion this reconcile read. False when that copy was stale (the apiserver
/// answered 409, or, for an unchanged status, holds a newer resourceVersion): then nothing may
/// follow from the decision, since it was taken from an outdated status.
async fn save_decision(
    obj: &InferenceDeployment,
    ctx: &Context,
    old: Option<&InferenceDeploymentStatus>,
    new: &InferenceDeploymentStatus,
) -> Result<bool> {
    let namespace = obj.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<InferenceDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    if old == Some(new) {
        // Nothing to write, but the children are about to be applied from this copy: a copy older
        // than our own last write (the watch lagging behind it) would undo what that write decided.
        let current = api.get(&obj.name_any()).await?;
        return Ok(current.resource_version() == obj.resource_version());
    }
    let mut patch = json!({
        "apiVersion": InferenceDeployment::api_version(&()),
        "kind": InferenceDeployment::kind(&()),
        "status": new,
    });
    if let Some(version) = obj.resource_version() {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    match api.patch_status(&obj.name_any(), &apply_params(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Events are best effort: a failed publish is logged and never fails the reconcile.
async fn publish(obj: &InferenceDeployment, ctx: &Context, decisions: &[Decision]) {
    let reference = obj.object_ref(&());
    for decision in decisions {
        let event = Event {
            type_: decision.event_type(),
            reason: decision.reason.to_string(),
            note: Some(decision.note.clone()),
            action: decision.action.to_string(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(name = %obj.name_any(), reason = decision.reason, %error, "failed to publish event");
        }
    }
}
