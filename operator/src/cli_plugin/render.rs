//! The tree `kubectl infergate get` prints, like `kubectl argo rollouts get rollout`: the
//! resource, its revisions with their pods, the last analysis windows against the SLO, and the
//! rollout history. Pure: status and pods in, text out.

use crate::crd::{InferenceDeploymentStatus, Measurement, RolloutRecord, SloSpec};

use super::outcome::outcome;

/// One pod of the resource, as `get` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// Its `infergate.dev/revision` label.
    pub revision: String,
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
    pub terminating: bool,
}

impl PodView {
    fn state(&self) -> &str {
        if self.terminating {
            "Terminating"
        } else if self.ready {
            "Ready"
        } else if self.phase == "Running" {
            "NotReady"
        } else {
            &self.phase
        }
    }
}

/// Everything `get` renders.
pub struct View<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub generation: Option<i64>,
    pub slo: &'a SloSpec,
    pub status: Option<&'a InferenceDeploymentStatus>,
    pub pods: &'a [PodView],
}

pub fn render(view: &View) -> String {
    let default = InferenceDeploymentStatus::default();
    let s = view.status.unwrap_or(&default);
    let mut out = String::new();
    let mut field = |label: &str, value: &str| out.push_str(&format!("{:<12} {value}\n", format!("{label}:")));
    field("Name", view.name);
    field("Namespace", view.namespace);
    field("Status", outcome(view.name, view.generation, view.status).line());
    if let Some(rollout) = &s.rollout {
        field(
            "Step",
            &format!(
                "{:?} (since {}, rollout started {})",
                rollout.step, rollout.step_started_at.0, rollout.started_at.0
            ),
        );
        if let Some(message) = &rollout.message {
            field("Message", message);
        }
    }
    if let Some(analysis) = s.analysis.as_ref().filter(|a| s.rollout.as_ref().is_some_and(|r| r.revision == a.revision))
    {
        field(
            "Analysis",
            &format!(
                "{} passed, {} failed, {} inconclusive, {} errors in a row",
                analysis.successful_checks,
                analysis.failed_checks,
                analysis.inconclusive_checks,
                analysis.consecutive_errors
            ),
        );
    }
    if let Some(scaling) = &s.autoscaling {
        let signal = scaling.signal_value.map_or("no data".to_string(), |v| format!("signal {v:.2} per replica"));
        let last = scaling.last_scale_time.as_ref().map_or(String::new(), |t| format!(", last scaled {}", t.0));
        field(
            "Autoscaling",
            &format!("{} -> {} replicas ({signal}{last})", scaling.current_replicas, scaling.desired_replicas),
        );
    }
    field(
        "SLO",
        &format!("P95 TTFT <= {} ms, error rate <= {}", view.slo.ttft_p95_ms, percent(view.slo.max_error_rate)),
    );
    for (label, revision) in [
        ("Active", &s.active_revision),
        ("Preview", &s.preview_revision),
        ("Previous", &s.previous_revision),
        ("Failed", &s.failed_revision),
    ] {
        if let Some(revision) = revision {
            field(label, revision);
        }
    }
    out.push('\n');
    out.push_str(&tree(view, s));
    if !s.measurements.is_empty() {
        out.push_str("\nMeasurements (newest last):\n");
        out.push_str(&measurements(&s.measurements, view.slo));
    }
    if !s.history.is_empty() {
        out.push_str("\nHistory (newest last):\n");
        out.push_str(&history(&s.history));
    }
    out
}

/// The revisions worth showing, in order: active, the one rolling out, then any other that
/// still has pods (a previous revision kept warm, a failed one draining).
fn revisions(s: &InferenceDeploymentStatus, pods: &[PodView]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let rolling = s.rollout.as_ref().map(|r| r.revision.clone());
    let baseline = s.rollout.as_ref().map(|r| r.baseline.clone());
    for revision in [s.active_revision.clone(), rolling, s.preview_revision.clone(), baseline]
        .into_iter()
        .flatten()
        .chain(pods.iter().map(|p| p.revision.clone()))
    {
        if !order.contains(&revision) {
            order.push(revision);
        }
    }
    order
}

fn roles(s: &InferenceDeploymentStatus, revision: &str) -> String {
    let is = |r: &Option<String>| r.as_deref() == Some(revision);
    let mut roles = Vec::new();
    if is(&s.active_revision) {
        roles.push("active");
    }
    if is(&s.preview_revision) || s.rollout.as_ref().is_some_and(|r| r.revision == revision && !is(&s.active_revision))
    {
        roles.push("preview");
    }
    if s.rollout.as_ref().is_some_and(|r| r.baseline == revision && !is(&s.active_revision)) {
        roles.push("baseline");
    }
    if is(&s.previous_revision) {
        roles.push("previous");
    }
    if is(&s.failed_revision) {
        roles.push("failed");
    }
    if roles.is_empty() {
        roles.push("old");
    }
    roles.join(",")
}

fn tree(view: &View, s: &InferenceDeploymentStatus) -> String {
    let phase = s.phase.map_or("-", |p| p.as_str());
    let mut rows = vec![
        vec!["NAME".to_string(), "KIND".into(), "STATUS".into(), "INFO".into()],
        vec![view.name.to_string(), "InferenceDeployment".into(), phase.into(), String::new()],
    ];
    let revisions = revisions(s, view.pods);
    for (i, revision) in revisions.iter().enumerate() {
        let last_revision = i + 1 == revisions.len();
        let (branch, indent) = if last_revision { ("└── ", "    ") } else { ("├── ", "│   ") };
        let pods: Vec<&PodView> = view.pods.iter().filter(|p| &p.revision == revision).collect();
        let ready = pods.iter().filter(|p| p.ready && !p.terminating).count();
        rows.push(vec![
            format!("{branch}revision {revision}"),
            "Revision".into(),
            roles(s, revision),
            format!("{ready}/{} ready", pods.len()),
        ]);
        for (j, pod) in pods.iter().enumerate() {
            let pod_branch = if j + 1 == pods.len() { "└── " } else { "├── " };
            rows.push(vec![
                format!("{indent}{pod_branch}{}", pod.name),
                "Pod".into(),
                pod.state().into(),
                format!("restarts {}", pod.restarts),
            ]);
        }
    }
    table(&rows)
}

fn measurements(measurements: &[Measurement], slo: &SloSpec) -> String {
    let mut rows = vec![["TIME", "REVISION", "VERDICT", "P95 TTFT (ms)", "ERROR RATE", "REQUESTS", "NOTE"]
        .map(String::from)
        .to_vec()];
    for m in measurements {
        let ttft = m.ttft_p95_ms.map_or("-".to_string(), |t| {
            format!("{t:.1} {} {}", if t > f64::from(slo.ttft_p95_ms) { ">" } else { "<=" }, slo.ttft_p95_ms)
        });
        let errors = m.error_rate.map_or("-".to_string(), |e| {
            format!(
                "{} {} {}",
                percent(e),
                if e > slo.max_error_rate { ">" } else { "<=" },
                percent(slo.max_error_rate)
            )
        });
        let mut note: Vec<String> = Vec::new();
        if let Some(baseline) = m.baseline_ttft_p95_ms {
            note.push(format!("baseline P95 {baseline:.1} ms"));
        }
        if let Some(message) = &m.message {
            note.push(message.clone());
        }
        rows.push(vec![
            m.time.0.to_string(),
            m.revision.clone(),
            format!("{:?}", m.verdict),
            ttft,
            errors,
            m.requests.to_string(),
            note.join("; "),
        ]);
    }
    table(&rows)
}

fn history(history: &[RolloutRecord]) -> String {
    let mut rows = vec![["TIME", "REVISION", "RESULT", "PREVIOUS", "REASON"].map(String::from).to_vec()];
    for r in history {
        rows.push(vec![
            r.time.0.to_string(),
            r.revision.clone(),
            r.result.as_str().into(),
            r.previous_revision.clone().unwrap_or_else(|| "-".into()),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    table(&rows)
}

fn percent(fraction: f64) -> String {
    format!("{:.2} %", fraction * 100.0)
}

/// Left-aligned columns two spaces apart; widths count characters (the tree's box drawing
/// characters are one column each), trailing spaces trimmed.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| v.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, value) in row.iter().enumerate() {
            line.push_str(value);
            let pad = widths[c].saturating_sub(value.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli_plugin::fixtures::{self, pod};
    use crate::crd::{RolloutStep, Verdict};

    fn slo() -> SloSpec {
        SloSpec { ttft_p95_ms: 1500, max_error_rate: 0.05, tpot_p95_ms: None }
    }

    fn rendered(status: &InferenceDeploymentStatus, pods: &[PodView]) -> String {
        let slo = slo();
        render(&View { name: "chat", namespace: "ml", generation: Some(2), slo: &slo, status: Some(status), pods })
    }

    #[test]
    fn analysis_tree_shows_both_revisions_their_pods_and_the_window_against_the_slo() {
        let pods = [
            pod("chat-aaa111-x", "aaa111", true, 0),
            pod("chat-aaa111-y", "aaa111", true, 0),
            pod("chat-bbb222-z", "bbb222", false, 3),
        ];
        let text = rendered(&fixtures::rolling(RolloutStep::Analyzing), &pods);
        let expected_tree = "\
NAME                   KIND                 STATUS     INFO
chat                   InferenceDeployment  Analyzing
├── revision aaa111    Revision             active     2/2 ready
│   ├── chat-aaa111-x  Pod                  Ready      restarts 0
│   └── chat-aaa111-y  Pod                  Ready      restarts 0
└── revision bbb222    Revision             preview    0/1 ready
    └── chat-bbb222-z  Pod                  NotReady   restarts 3
";
        assert!(text.contains(expected_tree), "{text}");
        assert!(text.contains("Step:        Analyzing (since"), "{text}");
        assert!(text.contains("SLO:         P95 TTFT <= 1500 ms, error rate <= 5.00 %"), "{text}");
        assert!(text.contains("bbb222    Pass     312.4 <= 1500  0.00 % <= 5.00 %  40"), "{text}");
    }

    #[test]
    fn the_autoscalers_last_decision_is_a_header_line() {
        let mut s = fixtures::healthy();
        assert!(!rendered(&s, &[]).contains("Autoscaling:"), "no line without spec.autoscaling");
        s.autoscaling = Some(crate::crd::AutoscalingStatus {
            current_replicas: 1,
            desired_replicas: 3,
            last_scale_time: None,
            signal_value: Some(7.5),
        });
        let text = rendered(&s, &[]);
        assert!(text.contains("Autoscaling: 1 -> 3 replicas (signal 7.50 per replica)"), "{text}");
    }

    #[test]
    fn a_breach_is_marked_and_history_listed() {
        let mut s = fixtures::rolled_back();
        s.measurements = vec![fixtures::measurement("bbb222", Verdict::Fail, Some(3012.0), Some(0.5))];
        let text = rendered(&s, &[pod("chat-aaa111-x", "aaa111", true, 0)]);
        assert!(text.contains("3012.0 > 1500  50.00 % > 5.00 %"), "{text}");
        assert!(text.contains("History (newest last):"), "{text}");
        assert!(text.contains("bbb222    Aborted  aaa111    aborted by annotation"), "{text}");
        assert!(text.contains("Failed:      bbb222"), "{text}");
        // A failed revision without pods is named in the header, not in the tree.
        assert!(!text.contains("revision bbb222"), "{text}");
    }

    #[test]
    fn terminating_and_unknown_revisions_still_show() {
        let mut terminating = pod("chat-old999-q", "old999", true, 1);
        terminating.terminating = true;
        let text = rendered(&fixtures::healthy(), &[pod("chat-aaa111-x", "aaa111", true, 0), terminating]);
        let line = text.lines().find(|l| l.starts_with("└── revision old999")).unwrap_or_default();
        let columns: Vec<&str> = line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(columns, ["└── revision old999", "Revision", "old", "0/1 ready"], "{text}");
        assert!(text.contains("Terminating  restarts 1"), "{text}");
    }

    #[test]
    fn no_status_renders_without_panicking() {
        let slo = slo();
        let text =
            render(&View { name: "chat", namespace: "ml", generation: Some(1), slo: &slo, status: None, pods: &[] });
        assert!(text.contains("Pending: waiting for the operator"), "{text}");
        assert!(text.contains("chat  InferenceDeployment  -"), "{text}");
    }
}
