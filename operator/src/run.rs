//! The running operator: HTTP endpoints, optional leader election and the controller.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::autoscale::{LiveSignals, SignalReader};
use crate::crd::InferenceDeployment;
use crate::error::{Error, Result};
use crate::gate::{Gate, LiveGate};
use crate::metrics::Metrics;
use crate::names::{FIELD_MANAGER, MANAGED_BY_SELECTOR};
use crate::reconcile::{error_policy, gate_key, reconcile, Context};

/// Lease timing: a new leader takes over at most this long after the old one stopped renewing.
const LEASE_DURATION_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

#[derive(Clone, Debug)]
pub struct Config {
    /// Watch one namespace, or the whole cluster when `None`.
    pub namespace: Option<String>,
    /// Address of `/metrics` and `/health`.
    pub http_addr: SocketAddr,
    /// Campaign for a Lease before reconciling; needed when more than one replica runs.
    pub leader_election: Option<LeaderElection>,
    /// This instance, as named in Events and the Lease (the pod name).
    pub identity: String,
}

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
}

/// Runs until SIGTERM/SIGINT (graceful: in-flight reconciles finish) or until leadership is lost
/// (an error, so the process restarts and campaigns again rather than run two leaders).
pub async fn run(config: Config) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new()?);
    let gate: Arc<dyn Gate> = Arc::new(LiveGate::new(client.clone())?);
    let signals: Arc<dyn SignalReader> = Arc::new(LiveSignals::new(client.clone())?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        infergate_protocol::process::shutdown_signal().await;
        info!("shutdown requested");
        // Receivers may all be gone already; then there is nobody left to tell.
        let _ = shutdown_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    info!(addr = %config.http_addr, "serving /metrics and /health");
    let http = tokio::spawn({
        let shutdown = wait_for(shutdown_rx.clone());
        let app = router(metrics.clone());
        async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await }
    });

    let outcome = match &config.leader_election {
        None => {
            run_controller(client, metrics, gate, signals, &config, wait_for(shutdown_rx.clone())).await;
            Ok(())
        }
        Some(election) => lead_then_run(client, metrics, gate, signals, &config, election, shutdown_rx).await,
    };
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "http server failed"),
        Err(e) => warn!(error = %e, "http server task failed"),
    }
    outcome
}

async fn lead_then_run(
    client: Client,
    metrics: Arc<Metrics>,
    gate: Arc<dyn Gate>,
    signals: Arc<dyn SignalReader>,
    config: &Config,
    election: &LeaderElection,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.lease_namespace)
        .with_identity(&config.identity)
        .with_duration(LEASE_DURATION_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(lease = %election.lease_name, identity = %config.identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() {
                return Err(lease_ended(lease_task).await);
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
    info!("leadership acquired");

    let mut watch_leader = leader.clone();
    let lost = async move {
        while *watch_leader.borrow_and_update() {
            if watch_leader.changed().await.is_err() {
                break;
            }
        }
    };
    let stop = wait_for(shutdown.clone());
    let leadership_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = leadership_lost.clone();
    let stop_or_lost = async move {
        tokio::select! {
            _ = stop => {},
            _ = lost => {
                error!("leadership lost; stopping the controller");
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            },
        }
    };
    run_controller(client, metrics, gate, signals, config, stop_or_lost).await;
    // Dropping the receivers releases the Lease so a standby takes over at once.
    drop(leader);
    match lease_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "lease release failed"),
        Err(e) => warn!(error = %e, "lease task failed"),
    }
    if leadership_lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::LeadershipLost);
    }
    Ok(())
}

async fn lease_ended(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> Error {
    match task.await {
        Ok(Err(e)) => Error::LeaderElection(e),
        _ => Error::LeadershipLost,
    }
}

async fn run_controller(
    client: Client,
    metrics: Arc<Metrics>,
    gate: Arc<dyn Gate>,
    signals: Arc<dyn SignalReader>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (resources, deployments, services) = match &config.namespace {
        Some(ns) => (
            Api::<InferenceDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<InferenceDeployment>::all(client.clone()),
            Api::<Deployment>::all(client.clone()),
            Api::<Service>::all(client.clone()),
        ),
    };
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(config.identity.clone()) };
    let ctx = Arc::new(Context::new(client.clone(), Recorder::new(client, reporter), metrics, gate, signals));
    let children = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    info!(namespace = ?config.namespace, "controller starting");
    let controller = Controller::new(resources, watcher::Config::default().any_semantic())
        .owns(deployments, children.clone())
        .owns(services, children);
    let sweeper = tokio::spawn(sweep_deleted(controller.store(), ctx.clone()));
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconcile done"),
                Err(error) => warn!(%error, "reconcile failed"),
            }
        })
        .await;
    sweeper.abort();
    info!("controller stopped");
}

/// How often resources missing from the controller's store are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Forgets (gate job, gauges) every resource the reconciler worked on that is no longer in the
/// store: without a finalizer the reconciler never sees a deleted object. Runs until aborted.
async fn sweep_deleted(store: Store<InferenceDeployment>, ctx: Arc<Context>) {
    // An empty store before the first list would look like every resource deleted.
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        ticks.tick().await;
        let present: BTreeSet<String> =
            store.state().iter().filter_map(|obj| Some(gate_key(&obj.namespace()?, &obj.name_any()))).collect();
        for key in ctx.tracked.take_gone(&present) {
            info!(resource = %key, "resource deleted; its gate job and gauges are dropped");
            ctx.forget(&key);
        }
    }
}

fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(render_metrics)).route("/health", get(|| async { "ok" })).with_state(metrics)
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.render() {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    // An Err means the sender is gone: nothing can ask for shutdown any more, so stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, metrics: Arc<Metrics>) -> (StatusCode, String) {
        let response = router(metrics).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_and_metrics_endpoints_answer() {
        let metrics = Arc::new(Metrics::new().unwrap());
        metrics.reconciliations.inc();
        assert_eq!(get("/health", metrics.clone()).await, (StatusCode::OK, "ok".into()));
        let (status, body) = get("/metrics", metrics.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("infergate_reconciliations_total 1"), "{body}");
        assert!(body.contains("infergate_reconcile_duration_seconds"), "{body}");
        assert_eq!(get("/nope", metrics).await.0, StatusCode::NOT_FOUND);
    }
}
