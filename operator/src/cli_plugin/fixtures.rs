//! Statuses as the operator writes them, for the plugin's pure tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::render::PodView;
use crate::crd::{
    AnalysisStatus, InferenceDeploymentStatus, Measurement, Phase, RolloutRecord, RolloutResult, RolloutState,
    RolloutStep, Verdict,
};

pub fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_780_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn ready(status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: time(0),
        observed_generation: Some(2),
    }
}

pub fn healthy() -> InferenceDeploymentStatus {
    InferenceDeploymentStatus {
        phase: Some(Phase::Healthy),
        active_revision: Some("aaa111".into()),
        desired_revision: Some("aaa111".into()),
        observed_generation: Some(2),
        replicas: Some(2),
        ready_replicas: Some(2),
        conditions: vec![ready("True", "Healthy", "revision aaa111 serves")],
        ..Default::default()
    }
}

pub fn measurement(revision: &str, verdict: Verdict, ttft: Option<f64>, errors: Option<f64>) -> Measurement {
    Measurement {
        revision: revision.into(),
        time: time(30),
        ttft_p95_ms: ttft,
        tpot_p95_ms: None,
        error_rate: errors,
        requests: 40,
        baseline_ttft_p95_ms: None,
        verdict,
        message: None,
    }
}

/// A rollout of bbb222 over aaa111 at `step`, one passing window measured.
pub fn rolling(step: RolloutStep) -> InferenceDeploymentStatus {
    let mut s = healthy();
    s.phase = Some(step.phase());
    s.preview_revision = Some("bbb222".into());
    s.desired_revision = Some("bbb222".into());
    s.rollout = Some(RolloutState {
        revision: "bbb222".into(),
        baseline: "aaa111".into(),
        step,
        started_at: time(10),
        step_started_at: time(20),
        window_started_at: None,
        message: None,
        result: None,
    });
    s.analysis = Some(AnalysisStatus {
        revision: "bbb222".into(),
        started_at: Some(time(20)),
        successful_checks: 1,
        ..Default::default()
    });
    let m = measurement("bbb222", Verdict::Pass, Some(312.4), Some(0.0));
    s.last_measurement = Some(m.clone());
    s.measurements = vec![m];
    s
}

/// bbb222 aborted during analysis; aaa111 serves.
pub fn rolled_back() -> InferenceDeploymentStatus {
    let mut s = healthy();
    s.phase = Some(Phase::RolledBack);
    s.failed_revision = Some("bbb222".into());
    s.desired_revision = Some("bbb222".into());
    s.conditions = vec![ready("False", "RolledBack", "revision bbb222 was rolled back")];
    s.history = vec![RolloutRecord {
        revision: "bbb222".into(),
        previous_revision: Some("aaa111".into()),
        result: RolloutResult::Aborted,
        reason: Some("aborted by annotation".into()),
        time: time(60),
    }];
    s
}

pub fn pod(name: &str, revision: &str, ready: bool, restarts: i32) -> PodView {
    PodView {
        name: name.into(),
        revision: revision.into(),
        phase: "Running".into(),
        ready,
        restarts,
        terminating: false,
    }
}
