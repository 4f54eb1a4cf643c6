//! `kubectl infergate`, the plugin, as users run it: the real `kubectl` finds
//! `kubectl-infergate` on PATH and the plugin reads the cluster from KUBECONFIG. It drives a
//! promote at AwaitingPromotion and an abort during analysis, and its `status` exit codes are
//! the documented ones (0 healthy, 1 rolled back, 2 still progressing at the timeout,
//! 3 refused request, 4 not found).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use infergate_operator::crd::{Phase, RolloutResult, RolloutStep};
use infergate_operator::names;
use serde_json::{json, Value};

use super::rollouts::serving;
use super::support::{
    control_annotations, expect_all_ok, gated_manifest, records, set, status, summary, wait_step, ClientLoad,
};
use super::Suite;
use crate::bail;
use crate::error::{Error, Result};

const NAMESPACE: &str = "e2e-plugin";
const NAME: &str = "plg";
const BINARY: &str = "kubectl-infergate";
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// Bounds one plugin run; `--wait` and `--watch` runs pass a shorter `--timeout` of their own.
const RUN_TIMEOUT: Duration = Duration::from_secs(150);

/// The plugin binary: next to this harness (both are built into CARGO_TARGET_DIR/release by
/// `make e2e-build`), or where INFERGATE_PLUGIN_BIN says.
fn plugin_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("INFERGATE_PLUGIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(BINARY)));
    let in_target = std::env::var_os("CARGO_TARGET_DIR").map(|dir| PathBuf::from(dir).join("release").join(BINARY));
    [beside, in_target].into_iter().flatten().find(|p| p.is_file()).ok_or_else(|| {
        Error::Failed(format!(
            "{BINARY} not found beside the harness nor in CARGO_TARGET_DIR/release (make e2e-build builds it)"
        ))
    })
}

/// `kubectl infergate ARGS` with the plugin's folder first on PATH; (exit code, stdout+stderr).
async fn plugin(suite: &Suite, args: &[&str]) -> Result<(i32, String)> {
    let binary = plugin_binary()?;
    let dir = binary.parent().map(PathBuf::from).unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&path)))
        .map_err(|e| Error::Failed(format!("PATH: {e}")))?;
    let mut command = tokio::process::Command::new("kubectl");
    command
        .arg("infergate")
        .args(args)
        .env("KUBECONFIG", &suite.kubectl.kubeconfig)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(Error::io("running kubectl infergate"))?;
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::Failed(format!("kubectl infergate {} ran past {} s", args.join(" "), RUN_TIMEOUT.as_secs()))
        })?
        .map_err(Error::io("waiting for kubectl infergate"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.code().unwrap_or(-1), text))
}

/// Runs the plugin and fails unless it exits with `code` and prints every one of `expected`.
async fn expect(suite: &Suite, args: &[&str], code: i32, expected: &[&str]) -> Result<String> {
    let (got, text) = plugin(suite, args).await?;
    let missing: Vec<&&str> = expected.iter().filter(|e| !text.contains(**e)).collect();
    if got != code || !missing.is_empty() {
        bail!("kubectl infergate {}: exit {got} (expected {code}), missing {missing:?} in:\n{text}", args.join(" "));
    }
    Ok(text)
}

fn manifest(tag: &str, auto_promote: bool) -> Value {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut m = gated_manifest(NAME, &format!("{tag}-{millis}"), &[], None);
    set(&mut m, "/spec/rollout/autoPromote", json!(auto_promote));
    m
}

/// `autoPromote: false`: the rollout waits at AwaitingPromotion, where `status` times out with
/// 2 and `get` shows both revisions; `kubectl infergate promote --wait` promotes it, once.
pub async fn promote(suite: &Suite) -> Result<()> {
    let old = serving(suite, NAMESPACE, NAME, None).await?;
    expect(suite, &["status", NAME, "-n", NAMESPACE], 0, &["Healthy: revision"]).await?;
    expect(suite, &["promote", NAME, "-n", NAMESPACE], 3, &["nothing to promote: no rollout in progress"]).await?;
    expect(suite, &["get", "missing", "-n", NAMESPACE], 4, &["not found"]).await?;

    let before = status(&suite.client, NAMESPACE, NAME).await?;
    suite.kubectl.apply(NAMESPACE, &manifest("plugin-promote", false).to_string()).await?;
    let waiting = wait_step(&suite.client, NAMESPACE, NAME, RolloutStep::AwaitingPromotion, STEP_TIMEOUT).await?;
    let new = waiting.rollout.as_ref().map(|r| r.revision.clone()).unwrap_or_default();
    expect(suite, &["status", NAME, "-n", NAMESPACE, "--watch", "--timeout", "3s"], 2, &["awaits promotion"]).await?;
    let tree = expect(
        suite,
        &["get", NAME, "-n", NAMESPACE],
        0,
        &["AwaitingPromotion", &format!("revision {old}"), &format!("revision {new}"), "Measurements", "Pass"],
    )
    .await?;
    println!("  kubectl infergate get {NAME} at AwaitingPromotion:\n{tree}");

    expect(
        suite,
        &["promote", NAME, "-n", NAMESPACE, "--wait", "--timeout", "120s"],
        0,
        &[&format!("promote requested: revision {new}"), &format!("promoted: revision {new} serves")],
    )
    .await?;
    let done = status(&suite.client, NAMESPACE, NAME).await?;
    let promoted =
        records(&done, &new, RolloutResult::Promoted).saturating_sub(records(&before, &new, RolloutResult::Promoted));
    if done.active_revision.as_deref() != Some(new.as_str()) || done.phase != Some(Phase::Healthy) || promoted != 1 {
        bail!("after promote: {promoted} Promoted records for {new} (expected 1): {}", summary(Some(&done)));
    }
    let left = control_annotations(&suite.client, NAMESPACE, NAME).await?;
    if !left.is_empty() {
        bail!("control annotations still on the resource after promote --wait: {left:?}");
    }
    expect(suite, &["status", NAME, "-n", NAMESPACE, "--watch", "--timeout", "10s"], 0, &["Healthy"]).await.map(|_| ())
}

/// Abort while Analyzing, under client load: the active revision keeps serving every request,
/// the preview is marked failed, and `status` exits 1 (rolled back).
pub async fn abort(suite: &Suite) -> Result<()> {
    let old = serving(suite, NAMESPACE, NAME, None).await?;
    let before = status(&suite.client, NAMESPACE, NAME).await?;
    let load = ClientLoad::start(&suite.client, NAMESPACE, &names::active_service_name(NAME), 2, 500);
    let outcome = async {
        suite.kubectl.apply(NAMESPACE, &manifest("plugin-abort", true).to_string()).await?;
        let analyzing = wait_step(&suite.client, NAMESPACE, NAME, RolloutStep::Analyzing, STEP_TIMEOUT).await?;
        let new = analyzing.rollout.as_ref().map(|r| r.revision.clone()).unwrap_or_default();
        expect(
            suite,
            &["abort", NAME, "-n", NAMESPACE, "--wait", "--timeout", "90s"],
            0,
            &[&format!("rollout of revision {new} stops"), &format!("aborted: revision {old} serves")],
        )
        .await?;
        Ok::<_, Error>(new)
    }
    .await;
    let requests = load.finish().await;
    let new = outcome?;
    expect_all_ok(&requests, 5)?;
    let done = status(&suite.client, NAMESPACE, NAME).await?;
    let aborted =
        records(&done, &new, RolloutResult::Aborted).saturating_sub(records(&before, &new, RolloutResult::Aborted));
    if done.active_revision.as_deref() != Some(old.as_str())
        || done.failed_revision.as_deref() != Some(new.as_str())
        || done.phase != Some(Phase::RolledBack)
        || aborted != 1
    {
        bail!("after abort: {aborted} Aborted records for {new} (expected 1): {}", summary(Some(&done)));
    }
    expect(suite, &["status", NAME, "-n", NAMESPACE], 1, &["RolledBack", &format!("{new} Aborted")]).await?;
    expect(suite, &["status", NAME, "-n", NAMESPACE, "--watch", "--timeout", "10s"], 1, &["RolledBack"]).await?;
    expect(suite, &["abort", NAME, "-n", NAMESPACE], 3, &["nothing to abort"]).await?;
    expect(suite, &["get", NAME, "-n", NAMESPACE], 0, &["History", "Aborted", &format!("Failed:      {new}")])
        .await
        .map(|_| ())
}
