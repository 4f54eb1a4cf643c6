//! Analyzing and Watching: windows are opened, their reports judged and counted, and the
//! analysis is bounded by `failureLimit`, `inconclusiveLimit`, `consecutiveErrorLimit` and
//! `deadlineSeconds`.

use super::{Machine, REPORT_GRACE_SECONDS};
use crate::analysis::{judge_window, Judgement};
use crate::crd::{AnalysisStatus, LimitPolicy, Measurement, RolloutResult, RolloutState, RolloutStep, Verdict};
use crate::rollout::{Action, GateWork, WindowReport, WindowWork, ANNOTATION_PROMOTE, HISTORY_LIMIT};

impl Machine<'_> {
    /// Analyzing and Watching: consume the finished window, judge it, open the next one.
    pub(super) fn analyze(&mut self, rollout: &RolloutState) -> bool {
        let watching = rollout.step == RolloutStep::Watching;
        if watching && self.due(&rollout.step_started_at, self.spec.rollout.post_promotion_watch_seconds) {
            self.set_step(RolloutStep::ScalingDown);
            self.actions.push(Action::StopGate);
            self.event(
                "WatchPassed",
                format!(
                    "revision {} served {}s without regression; {} scaled down in {}s",
                    rollout.revision,
                    self.spec.rollout.post_promotion_watch_seconds,
                    rollout.baseline,
                    self.spec.rollout.scale_down_delay_seconds
                ),
            );
            return true;
        }
        let report = rollout.window_started_at.as_ref().and_then(|start| {
            self.observed.report.as_ref().filter(|r| r.revision == rollout.revision && r.started_at == *start).cloned()
        });
        let Some(report) = report else {
            return self.await_report(rollout);
        };
        let judgement = self.judge(&report);
        self.record_measurement(&report, &judgement);
        let analysis = self.count(rollout, &judgement);
        if watching {
            if judgement.verdict == Verdict::Fail {
                let reason = format!("regression after promotion: {}", judgement.message);
                self.roll_back(RolloutResult::RolledBack, reason);
                return true;
            }
            self.open_window(rollout);
            return false;
        }
        let analysis_spec = &self.spec.rollout.analysis;
        let (passed, failed) = (analysis.successful_checks, analysis.failed_checks);
        if failed > analysis_spec.failure_limit {
            let reason = format!(
                "analysis failed {failed} times (limit {}): {}",
                analysis_spec.failure_limit, judgement.message
            );
            self.roll_back(RolloutResult::RolledBack, reason);
            return true;
        }
        if judgement.verdict == Verdict::Fail {
            self.warn(
                "AnalysisFailed",
                format!("window {failed}/{} failed: {}", analysis_spec.failure_limit + 1, judgement.message),
            );
        }
        if passed >= analysis_spec.successful_checks {
            self.analysis_passed(rollout, passed);
            return true;
        }
        if let Some(reason) = self.limit_reached(rollout, &analysis, &judgement) {
            self.limit_exceeded(rollout, reason);
            return true;
        }
        self.open_window(rollout);
        false
    }

    /// No report for the open window (yet): keep waiting, or measure a fresh window when the
    /// gate lost it; the analysis deadline holds either way.
    fn await_report(&mut self, rollout: &RolloutState) -> bool {
        if rollout.step == RolloutStep::Analyzing {
            if let Some(reason) = self.deadline_passed(rollout) {
                self.limit_exceeded(rollout, reason);
                return true;
            }
        }
        let Some(window_start) = rollout.window_started_at.clone() else {
            self.open_window(rollout);
            return false;
        };
        let interval = self.spec.rollout.analysis.interval_seconds;
        let overdue = self.elapsed(&window_start) >= i64::from(interval) + REPORT_GRACE_SECONDS;
        if !self.gate_busy() || overdue {
            // The window's start scrape died with a previous operator process (or the gate
            // hung): measure a fresh window; the counts in status are kept.
            self.open_window(rollout);
        } else {
            let left = i64::from(interval) - self.elapsed(&window_start);
            self.wake_in(left.max(1) + 1);
        }
        false
    }

    /// Adds the window to the counts. A window that could not be measured counts only towards
    /// the run of measurement errors (any measured window resets it); an Inconclusive one towards
    /// the analysis' total of inconclusive windows, which nothing resets (Argo's meaning).
    fn count(&mut self, rollout: &RolloutState, judgement: &Judgement) -> AnalysisStatus {
        let analysis = self
            .status
            .analysis
            .get_or_insert_with(|| AnalysisStatus { revision: rollout.revision.clone(), ..AnalysisStatus::default() });
        if judgement.measurement_error {
            analysis.consecutive_errors += 1;
            return analysis.clone();
        }
        analysis.consecutive_errors = 0;
        match judgement.verdict {
            Verdict::Pass => analysis.successful_checks += 1,
            Verdict::Fail => analysis.failed_checks += 1,
            Verdict::Inconclusive => analysis.inconclusive_checks += 1,
        }
        analysis.clone()
    }

    fn analysis_passed(&mut self, rollout: &RolloutState, passed: u32) {
        if self.spec.rollout.auto_promote {
            self.event("AnalysisPassed", format!("revision {} passed {passed} checks; promoting", rollout.revision));
            self.begin_promotion();
        } else {
            self.set_step(RolloutStep::AwaitingPromotion);
            self.event(
                "AwaitingPromotion",
                format!(
                    "revision {} passed {passed} checks; autoPromote is off: annotate {ANNOTATION_PROMOTE} to promote",
                    rollout.revision
                ),
            );
            self.actions.push(Action::StopGate);
        }
    }

    /// Why the analysis must end now although no window decided it, if it must.
    fn limit_reached(&mut self, rollout: &RolloutState, analysis: &AnalysisStatus, last: &Judgement) -> Option<String> {
        let spec = &self.spec.rollout.analysis;
        if analysis.consecutive_errors > spec.consecutive_error_limit {
            return Some(format!(
                "{} windows in a row could not be measured (consecutiveErrorLimit {}): {}",
                analysis.consecutive_errors, spec.consecutive_error_limit, last.message
            ));
        }
        if analysis.inconclusive_checks > spec.inconclusive_limit {
            return Some(format!(
                "{} inconclusive windows in this analysis (inconclusiveLimit {}): {}",
                analysis.inconclusive_checks, spec.inconclusive_limit, last.message
            ));
        }
        self.deadline_passed(rollout)
    }

    fn deadline_passed(&mut self, rollout: &RolloutState) -> Option<String> {
        let deadline = self.spec.rollout.analysis.deadline_seconds;
        self.due(&rollout.step_started_at, deadline).then(|| {
            let analysis = self.status.analysis.clone().unwrap_or_default();
            format!(
                "analysis undecided after deadlineSeconds {deadline}: {} passed, {} failed, {} inconclusive windows",
                analysis.successful_checks, analysis.failed_checks, analysis.inconclusive_checks
            )
        })
    }

    /// `onLimitExceeded`: roll back, or pause for a manual decision.
    fn limit_exceeded(&mut self, rollout: &RolloutState, reason: String) {
        match self.spec.rollout.analysis.on_limit_exceeded {
            LimitPolicy::Rollback => {
                self.warn("AnalysisLimitExceeded", format!("revision {}: {reason}; rolling back", rollout.revision));
                self.roll_back(RolloutResult::RolledBack, reason);
            }
            LimitPolicy::Pause => {
                self.actions.push(Action::StopGate);
                self.set_step(RolloutStep::Paused);
                if let Some(current) = self.status.rollout.as_mut() {
                    current.message = Some(reason.clone());
                }
                self.warn(
                    "AnalysisLimitExceeded",
                    format!(
                        "revision {}: {reason}; paused: annotate infergate.dev/promote, abort or retry",
                        rollout.revision
                    ),
                );
            }
        }
    }

    fn judge(&self, report: &WindowReport) -> Judgement {
        judge_window(report, &self.spec.slo, &self.spec.rollout.analysis)
    }

    fn record_measurement(&mut self, report: &WindowReport, judgement: &Judgement) {
        let measurement = Measurement {
            revision: report.revision.clone(),
            time: self.now.clone(),
            ttft_p95_ms: report.candidate.ttft_p95_seconds.map(|s| round3(s * 1000.0)),
            tpot_p95_ms: None,
            error_rate: report.candidate.error_rate().map(round6),
            requests: report.candidate.requests.max(0.0).round() as u64,
            baseline_ttft_p95_ms: report.baseline.as_ref().and_then(|b| b.ttft_p95_seconds).map(|s| round3(s * 1000.0)),
            verdict: judgement.verdict,
            message: Some(judgement.message.clone()),
        };
        self.actions.push(Action::Measured(measurement.clone()));
        self.status.last_measurement = Some(measurement.clone());
        self.status.measurements.push(measurement);
        let excess = self.status.measurements.len().saturating_sub(HISTORY_LIMIT);
        self.status.measurements.drain(..excess);
    }

    pub(super) fn open_window(&mut self, rollout: &RolloutState) {
        let seconds = self.spec.rollout.analysis.interval_seconds;
        let baseline = self.spec.rollout.analysis.max_regression_percent.map(|_| rollout.baseline.clone());
        let watching = self.status.rollout.as_ref().is_some_and(|r| r.step == RolloutStep::Watching);
        if let Some(current) = self.status.rollout.as_mut() {
            current.window_started_at = Some(self.now.clone());
        }
        self.actions.push(Action::Gate(GateWork::Measure(WindowWork {
            revision: rollout.revision.clone(),
            baseline,
            started_at: self.now.clone(),
            seconds,
            // The step now, not the one `rollout` was copied in: a window opened right after a
            // transition belongs to the new step.
            candidate_serves_users: watching,
        })));
        self.wake_in(i64::from(seconds) + 1);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
