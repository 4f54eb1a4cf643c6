//! Autoscaling on the servers' own load: a bounded burst of clients scales the active revision
//! up, idleness scales it back to `minReplicas`, and not one client request fails during either;
//! then `kubectl scale` drives the resource through `/scale`, as an HPA does. The scale-up time
//! (burst start to the new pod serving) and the scale-down time (burst end to one pod left
//! serving) are printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infergate_bench::report::RequestRecord;

use serde_json::json;

use super::support::{
    apply_and_wait_healthy, count_events, expect_all_ok, gated_manifest, namespace, request_tokens_via_service,
    revision_replicas, set, status, wait_status, ClientLoad,
};
use super::Suite;
use crate::bail;
use crate::error::Result;
use crate::services::ready_backends;
use crate::wait;

const NAMESPACE: &str = "e2e-autoscale";
const NAME: &str = "burst";
const MAX_REPLICAS: i32 = 2;
/// Clients in the burst, each with one streamed completion at a time.
const BURST_WORKERS: usize = 8;
/// Long completions: each client looks up the Service's pods before every request, so short
/// ones would leave the server idle between them and the burst would only be a spike.
const BURST_TOKENS: usize = 64;
/// Per worker: bounds the burst by count; the waits below bound it by time.
const BURST_MAX_REQUESTS: usize = 200;
/// The autoscaler's target: in-flight requests per replica.
const IN_FLIGHT_TARGET: u32 = 1;
/// Short windows so the scenario fits in a few minutes; the semantics are the HPA's.
const SCALE_DOWN_STABILIZATION_SECONDS: u32 = 15;

fn manifest() -> serde_json::Value {
    let mut manifest = gated_manifest(NAME, "v1", &[], None);
    set(
        &mut manifest,
        "/spec/autoscaling",
        json!({
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "target": {"inFlightPerReplica": IN_FLIGHT_TARGET},
            "scaleUpStabilizationSeconds": 0,
            "scaleDownStabilizationSeconds": SCALE_DOWN_STABILIZATION_SECONDS,
        }),
    );
    manifest
}

/// `workers` clients streaming `BURST_TOKENS`-token completions through the Service until
/// stopped, each bounded by `BURST_MAX_REQUESTS`.
struct Burst {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<RequestRecord>>>,
}

impl Burst {
    fn start(suite: &Suite, workers: usize) -> Burst {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (client, stop) = (suite.client.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut records = Vec::new();
                    while !stop.load(Ordering::Relaxed) && records.len() < BURST_MAX_REQUESTS {
                        let prompt = format!("Burst worker {w}, request {}: tell a short story.", records.len());
                        records.push(request_tokens_via_service(&client, NAMESPACE, NAME, &prompt, BURST_TOKENS).await);
                    }
                    records
                })
            })
            .collect();
        Burst { stop, workers }
    }

    async fn finish(self) -> Vec<RequestRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for worker in self.workers {
            all.extend(worker.await.unwrap_or_default());
        }
        all
    }
}

/// Ready pods behind the active Service.
async fn serving_pods(suite: &Suite) -> Result<usize> {
    Ok(ready_backends(&suite.client, NAMESPACE, NAME).await?.len())
}

pub async fn burst_scales_up_and_idle_scales_down(suite: &Suite) -> Result<()> {
    namespace(suite, NAMESPACE).await?;
    let revision = apply_and_wait_healthy(suite, NAMESPACE, &manifest(), None, Duration::from_secs(120)).await?;
    wait::until("one pod serving before the burst", Duration::from_secs(60), || async {
        Ok((serving_pods(suite).await? == 1).then_some(()))
    })
    .await?;

    let burst_started = Instant::now();
    let burst = Burst::start(suite, BURST_WORKERS);
    let scaled_up = wait::until("the burst scaled the active revision up", Duration::from_secs(90), || async {
        Ok((serving_pods(suite).await? >= MAX_REPLICAS as usize).then_some(()))
    })
    .await;
    let scale_up_seconds = burst_started.elapsed().as_secs_f64();
    // A few more seconds of burst on both pods: requests must keep succeeding after the switch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let burst_records = burst.finish().await;
    scaled_up?;
    expect_all_ok(&burst_records, BURST_WORKERS)?;
    let up = status(&suite.client, NAMESPACE, NAME).await?;
    let Some(autoscaling) = up.autoscaling.as_ref() else { bail!("status.autoscaling missing after the scale-up") };
    if autoscaling.desired_replicas != MAX_REPLICAS || autoscaling.last_scale_time.is_none() {
        bail!("status.autoscaling after the burst: {autoscaling:?}");
    }

    // Idle but for one client, which must see no failure while a pod goes away.
    let idle_started = Instant::now();
    let trickle = ClientLoad::start(&suite.client, NAMESPACE, NAME, 1, BURST_MAX_REQUESTS);
    let scaled_down = wait::until("idleness scaled back to minReplicas", Duration::from_secs(120), || async {
        let replicas = revision_replicas(&suite.client, NAMESPACE, NAME, &revision).await?;
        Ok((replicas == Some(1) && serving_pods(suite).await? == 1).then_some(()))
    })
    .await;
    let scale_down_seconds = idle_started.elapsed().as_secs_f64();
    let trickle_records = trickle.finish().await;
    scaled_down?;
    expect_all_ok(&trickle_records, 1)?;
    let events = count_events(&suite.client, NAMESPACE, NAME, "Autoscaled").await?;
    if events < 2 {
        bail!("expected an Autoscaled Event for the scale-up and one for the scale-down, found {events}");
    }
    println!(
        "  autoscaling: scale-up {scale_up_seconds:.1} s (burst start -> 2nd pod serving, {} requests ok), \
         scale-down {scale_down_seconds:.1} s (burst end -> 1 pod serving, window {SCALE_DOWN_STABILIZATION_SECONDS} s, \
         {} requests ok)",
        burst_records.len(),
        trickle_records.len()
    );
    Ok(())
}

pub async fn kubectl_scale_drives_the_scale_subresource(suite: &Suite) -> Result<()> {
    namespace(suite, NAMESPACE).await?;
    let revision = match status(&suite.client, NAMESPACE, NAME).await.ok().and_then(|s| s.active_revision) {
        Some(revision) => revision,
        None => apply_and_wait_healthy(suite, NAMESPACE, &manifest(), None, Duration::from_secs(120)).await?,
    };
    // An external scaler owns the replicas now: the built-in autoscaler steps aside.
    let off = json!({"spec": {"autoscaling": null}}).to_string();
    suite.kubectl.run(&["patch", "-n", NAMESPACE, "infd", NAME, "--type", "merge", "-p", &off], None).await?;
    wait_status(&suite.client, NAMESPACE, NAME, "status.autoscaling cleared", Duration::from_secs(30), |s| {
        s.autoscaling.is_none()
    })
    .await?;
    for replicas in [2, 1] {
        let count = format!("--replicas={replicas}");
        suite.kubectl.run(&["scale", "-n", NAMESPACE, "infd", NAME, &count], None).await?;
        wait::until(&format!("kubectl scale to {replicas} reached the pods"), Duration::from_secs(90), || async {
            let deployment = revision_replicas(&suite.client, NAMESPACE, NAME, &revision).await?;
            let serving = serving_pods(suite).await?;
            Ok((deployment == Some(replicas) && serving == replicas as usize).then_some(()))
        })
        .await?;
        wait_status(&suite.client, NAMESPACE, NAME, "status.replicas follows", Duration::from_secs(30), |s| {
            s.replicas == Some(replicas)
        })
        .await?;
        let scale = suite
            .kubectl
            .run(
                &[
                    "get",
                    "-n",
                    NAMESPACE,
                    "infd",
                    NAME,
                    "--subresource=scale",
                    "-o",
                    "jsonpath={.spec.replicas} {.status.replicas} {.status.selector}",
                ],
                None,
            )
            .await?;
        let wanted_selector = format!("infergate.dev/revision={revision}");
        if !scale.starts_with(&format!("{replicas} ")) || !scale.contains(&wanted_selector) {
            bail!("the scale subresource reads {scale:?} (expected {replicas} replicas, selector of {revision})");
        }
    }
    Ok(())
}
