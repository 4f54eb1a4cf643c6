//! The targets a run is judged against: issue 3's side-by-side targets (ratios to llama-server
//! in the same run) and the seed document's absolute goals. Judged on medians over rounds; with
//! several rounds the document also says in how many rounds the target held on its own.

use super::aggregate::{agg, ratio, round_ratios, Agg, Metric};
use super::format;
use super::results::RunSet;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// candidate / base >= x
    RatioAtLeast(f64),
    /// candidate / base <= x
    RatioAtMost(f64),
    /// the candidate's value < x (absolute)
    Below(f64),
    /// the candidate had no errors in any round
    NoErrors,
    /// no threshold: the document states the measured gain
    Stated,
}

impl Rule {
    /// Whether `value` (a ratio, or the candidate's own value) satisfies the rule.
    pub fn holds(self, value: f64) -> Option<bool> {
        match self {
            Rule::RatioAtLeast(x) => Some(value >= x),
            Rule::RatioAtMost(x) => Some(value <= x),
            Rule::Below(x) => Some(value < x),
            Rule::NoErrors => Some(value == 0.0),
            Rule::Stated => None,
        }
    }

    fn is_ratio(self) -> bool {
        matches!(self, Rule::RatioAtLeast(_) | Rule::RatioAtMost(_) | Rule::Stated)
    }
}

/// One target: a metric of `candidate` in `scenario`, against `base` for ratio rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub scenario: &'static str,
    pub candidate: &'static str,
    pub base: &'static str,
    pub metric: Metric,
    pub rule: Rule,
    /// The target as issue 3 words it.
    pub text: &'static str,
}

const fn peer(scenario: &'static str, metric: Metric, rule: Rule, text: &'static str) -> Target {
    Target { scenario, candidate: "infergate", base: "llama", metric, rule, text }
}

/// Issue 3's targets, in its table's order.
pub const ISSUE3: [Target; 7] = [
    peer("seed", Metric::TokS, Rule::RatioAtLeast(1.2), "tok/s >= 1.2x llama-server"),
    peer("seed", Metric::TtftP95, Rule::RatioAtMost(1.0), "TTFT P95 <= 1.0x llama-server"),
    peer("seed", Metric::Errors, Rule::NoErrors, "0 errors"),
    peer("c32", Metric::TokS, Rule::RatioAtLeast(1.2), "tok/s >= 1.2x llama-server"),
    peer("single", Metric::TpotP50, Rule::RatioAtMost(1.1), "TPOT P50 <= 1.1x llama-server"),
    peer("open", Metric::TtftP95, Rule::Below(500.0), "TTFT P95 < 500 ms (the seed's target)"),
    Target {
        scenario: "batching",
        candidate: "infergate",
        base: "infergate-nobatch",
        metric: Metric::TokS,
        rule: Rule::Stated,
        text: "the gain of batching on over off, stated",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    NotMet,
    NotMeasured,
    Stated,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "**met**",
            Verdict::NotMet => "**not met**",
            Verdict::NotMeasured => "not measured",
            Verdict::Stated => "stated",
        }
    }
}

/// A target judged on one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub candidate: Option<Agg>,
    pub base: Option<Agg>,
    pub ratio: Option<f64>,
    pub verdict: Verdict,
    /// (rounds where the target held on its own, rounds compared).
    pub rounds: (usize, usize),
}

pub fn evaluate(t: &Target, set: &RunSet) -> Outcome {
    let cand_runs = set.series(t.scenario, t.candidate);
    let base_runs = set.series(t.scenario, t.base);
    let candidate = agg(&cand_runs, t.metric);
    let base = agg(&base_runs, t.metric);
    let ratio = ratio(candidate, base);
    // The value judged: the ratio of medians, the candidate's median, or (errors) its worst round.
    let judged = if t.rule.is_ratio() {
        ratio
    } else if t.rule == Rule::NoErrors {
        candidate.map(|a| a.max)
    } else {
        candidate.map(|a| a.median)
    };
    let per_round: Vec<f64> = if t.rule.is_ratio() {
        round_ratios(&cand_runs, &base_runs, t.metric)
    } else {
        cand_runs.iter().filter_map(|r| t.metric.of(&r.result)).collect()
    };
    let held = per_round.iter().filter(|v| t.rule.holds(**v) == Some(true)).count();
    let verdict = match (judged, t.rule.holds(judged.unwrap_or(f64::NAN))) {
        (None, _) => Verdict::NotMeasured,
        (Some(_), None) => Verdict::Stated,
        (Some(_), Some(true)) => Verdict::Met,
        (Some(_), Some(false)) => Verdict::NotMet,
    };
    Outcome { candidate, base, ratio, verdict, rounds: (held, per_round.len()) }
}

/// One of the seed document's goals, judged on the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub text: &'static str,
    pub measured: String,
    pub verdict: Verdict,
}

/// Closed-loop scenarios whose infergate throughput the seed's "> 100 tokens/s" applies to.
const CLOSED_LOOP: [&str; 3] = ["seed", "c32", "single"];

pub fn seed_goals(set: &RunSet) -> Vec<Goal> {
    let ttft = evaluate(&ISSUE3[5], set);
    let ttft_goal = Goal {
        text: "TTFT P95 < 500 ms (open loop, 1 req/s)",
        measured: ttft.candidate.map_or_else(|| "-".into(), |a| format!("{} ms", format::agg(Some(a)))),
        verdict: ttft.verdict,
    };

    let tok: Vec<(&str, Agg)> =
        CLOSED_LOOP.iter().filter_map(|s| Some((*s, agg(&set.series(s, "infergate"), Metric::TokS)?))).collect();
    let throughput_goal = Goal {
        text: "throughput > 100 tokens/s (infergate, every closed-loop scenario)",
        measured: if tok.is_empty() {
            "-".into()
        } else {
            tok.iter().map(|(s, a)| format!("{s} {}", format::agg(Some(*a)))).collect::<Vec<_>>().join(", ")
        },
        verdict: match tok.iter().map(|(_, a)| a.median).reduce(f64::min) {
            None => Verdict::NotMeasured,
            Some(lowest) if lowest > 100.0 => Verdict::Met,
            Some(_) => Verdict::NotMet,
        },
    };

    let default_runs = set.runs.iter().filter(|r| r.kind == "infergate");
    let (errors, count) =
        default_runs.fold((0, 0), |(e, c), r| (e + r.result.summary.errors, c + r.result.summary.count));
    let error_goal = Goal {
        text: "error rate < 5 % (infergate, default configuration, all scenarios)",
        measured: if count == 0 {
            "-".into()
        } else {
            format!("{:.1} % ({errors} of {count} requests)", 100.0 * errors as f64 / count as f64)
        },
        verdict: match count {
            0 => Verdict::NotMeasured,
            _ if (errors as f64) < 0.05 * count as f64 => Verdict::Met,
            _ => Verdict::NotMet,
        },
    };

    let vram_goal = Goal {
        text: "VRAM < 16 GB with 8-bit quantization",
        measured: "- (this suite runs on the CPU)".into(),
        verdict: Verdict::NotMeasured,
    };
    vec![ttft_goal, throughput_goal, error_goal, vram_goal]
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::tests::run;
    use super::*;

    fn set(runs: Vec<crate::benchmarks::results::Run>) -> RunSet {
        RunSet { stamp: "s".into(), runs, ..Default::default() }
    }

    #[test]
    fn rules() {
        assert_eq!(Rule::RatioAtLeast(1.2).holds(1.2), Some(true));
        assert_eq!(Rule::RatioAtLeast(1.2).holds(1.19), Some(false));
        assert_eq!(Rule::RatioAtMost(1.0).holds(1.0), Some(true));
        assert_eq!(Rule::RatioAtMost(1.0).holds(1.01), Some(false));
        assert_eq!(Rule::Below(500.0).holds(500.0), Some(false));
        assert_eq!(Rule::NoErrors.holds(0.0), Some(true));
        assert_eq!(Rule::NoErrors.holds(1.0), Some(false));
        assert_eq!(Rule::Stated.holds(2.0), None);
    }

    #[test]
    fn ratio_target_on_medians_with_round_count() {
        // Round 2 alone misses 1.2x (1.1x); the medians (200 / 125 = 1.6x) meet it.
        let s = set(vec![
            run("seed", "infergate", 1, 200.0, 900.0, 0),
            run("seed", "infergate", 2, 165.0, 900.0, 0),
            run("seed", "infergate", 3, 210.0, 900.0, 0),
            run("seed", "llama", 1, 125.0, 1800.0, 0),
            run("seed", "llama", 2, 150.0, 1800.0, 0),
            run("seed", "llama", 3, 100.0, 1800.0, 0),
        ]);
        let o = evaluate(&ISSUE3[0], &s);
        assert_eq!(o.verdict, Verdict::Met);
        assert!((o.ratio.unwrap() - 1.6).abs() < 1e-12);
        assert_eq!(o.rounds, (2, 3));
        let ttft = evaluate(&ISSUE3[1], &s);
        assert_eq!(ttft.verdict, Verdict::Met);
        assert_eq!(ttft.rounds, (3, 3));
        assert_eq!(evaluate(&ISSUE3[3], &s).verdict, Verdict::NotMeasured);
    }

    #[test]
    fn ratio_target_not_met() {
        let s = set(vec![run("seed", "infergate", 1, 130.0, 2100.0, 0), run("seed", "llama", 1, 120.0, 2000.0, 0)]);
        assert_eq!(evaluate(&ISSUE3[0], &s).verdict, Verdict::NotMet);
        assert_eq!(evaluate(&ISSUE3[1], &s).verdict, Verdict::NotMet);
    }

    #[test]
    fn errors_must_be_zero_in_every_round() {
        let s = set(vec![run("seed", "infergate", 1, 200.0, 1.0, 0), run("seed", "infergate", 2, 200.0, 1.0, 1)]);
        let o = evaluate(&ISSUE3[2], &s);
        assert_eq!(o.verdict, Verdict::NotMet);
        assert_eq!(o.rounds, (1, 2));
    }

    #[test]
    fn absolute_and_stated_targets() {
        let s = set(vec![
            run("open", "infergate", 1, 120.0, 499.0, 0),
            run("batching", "infergate", 1, 200.0, 1.0, 0),
            run("batching", "infergate-nobatch", 1, 100.0, 1.0, 0),
        ]);
        let open = evaluate(&ISSUE3[5], &s);
        assert_eq!(open.verdict, Verdict::Met);
        assert_eq!(open.ratio, None);
        let batching = evaluate(&ISSUE3[6], &s);
        assert_eq!(batching.verdict, Verdict::Stated);
        assert_eq!(batching.ratio, Some(2.0));
        let slow = set(vec![run("open", "infergate", 1, 120.0, 512.0, 0)]);
        assert_eq!(evaluate(&ISSUE3[5], &slow).verdict, Verdict::NotMet);
    }

    #[test]
    fn seed_goals_judged() {
        let mut runs = vec![
            run("open", "infergate", 1, 120.0, 300.0, 0),
            run("seed", "infergate", 1, 200.0, 1.0, 1),
            run("single", "infergate", 1, 95.0, 1.0, 0),
        ];
        let goals = seed_goals(&set(runs.clone()));
        assert_eq!(goals[0].verdict, Verdict::Met);
        assert_eq!(goals[1].verdict, Verdict::NotMet, "single stream at 95 tok/s misses > 100");
        assert_eq!(goals[1].measured, "seed 200, single 95.0");
        assert_eq!(goals[2].verdict, Verdict::Met);
        assert_eq!(goals[2].measured, "0.7 % (1 of 150 requests)");
        assert_eq!(goals[3].verdict, Verdict::NotMeasured);
        runs[1].result.summary.errors = 10;
        assert_eq!(seed_goals(&set(runs))[2].verdict, Verdict::NotMet);
        assert!(seed_goals(&set(vec![])).iter().all(|g| g.verdict == Verdict::NotMeasured));
    }
}
