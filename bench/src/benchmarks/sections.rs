//! The computed tables and lists of BENCHMARKS.md, one function per template placeholder.
//! Each says plainly when the run did not measure what it needs instead of leaving a gap.

use super::aggregate::{agg, ratio, Agg, Metric};
use super::catalog::{kind_name, ABLATION, PEER_SCENARIOS};
use super::format::{self, table};
use super::results::{Run, RunSet};
use super::targets::{evaluate, seed_goals, Rule, Verdict, ISSUE3};

fn not_measured(scenario: &str) -> String {
    format!("*Not measured in this run (scenario `{scenario}` was not selected: `SCENARIOS=...`).*\n")
}

/// "10 concurrent, 50 requests", from the parameters the bench recorded.
pub fn describe(set: &RunSet, scenario: &str) -> String {
    let Some(r) = set.runs.iter().find(|r| r.scenario == scenario) else { return "not run".to_string() };
    let p = &r.result.params;
    match (p.concurrency, p.rate) {
        (Some(1), _) => format!("1 stream, {} requests", p.requests),
        (Some(c), _) => format!("{c} concurrent, {} requests", p.requests),
        (None, Some(rate)) => format!("open loop, Poisson {rate} req/s, {} requests", p.requests),
        _ => format!("{} requests", p.requests),
    }
}

fn rounds_note(set: &RunSet) -> String {
    match set.rounds() {
        0 | 1 => "one round".into(),
        n => format!("medians of {n} rounds, (min-max) over rounds"),
    }
}

fn metric_cells(runs: &[&Run]) -> Vec<String> {
    Metric::TABLE.iter().map(|m| format::metric(agg(runs, *m), *m)).collect()
}

fn headers_with(first: &[&'static str]) -> Vec<&'static str> {
    first.iter().copied().chain(Metric::TABLE.iter().map(|m| m.header())).collect()
}

/// One configuration's numbers as a bullet list.
pub fn run_list(set: &RunSet, scenario: &str, kind: &str) -> String {
    let runs = set.series(scenario, kind);
    if runs.is_empty() {
        return not_measured(scenario);
    }
    let v = |m: Metric| format::metric(agg(&runs, m), m);
    format!(
        "- {} ({}, `{scenario}` scenario, {}): **{} tok/s**, TTFT P50 {} ms, TTFT P95 {} ms, TPOT P50 {} ms, \
         {} errors, peak RSS {} MiB.\n",
        kind_name(kind),
        describe(set, scenario),
        rounds_note(set),
        v(Metric::TokS),
        v(Metric::TtftP50),
        v(Metric::TtftP95),
        v(Metric::TpotP50),
        v(Metric::Errors),
        v(Metric::PeakRssMib),
    )
}

/// Before / after / delta between two configurations of one scenario.
pub fn delta(set: &RunSet, scenario: &str, before: &str, after: &str) -> String {
    let (b, a) = (set.series(scenario, before), set.series(scenario, after));
    if b.is_empty() || a.is_empty() {
        return not_measured(scenario);
    }
    let mut delta = vec!["**delta**".to_string()];
    delta.extend(Metric::TABLE.iter().map(|m| format!("**{}**", format::delta(agg(&b, *m), agg(&a, *m), *m))));
    let rows = vec![
        [vec![format!("before: {}", kind_name(before))], metric_cells(&b)].concat(),
        [vec![format!("after: {}", kind_name(after))], metric_cells(&a)].concat(),
        delta,
    ];
    format!(
        "({}, `{scenario}` scenario, {})\n\n{}",
        describe(set, scenario),
        rounds_note(set),
        table(&headers_with(&["configuration"]), &rows)
    )
}

/// infergate and llama-server per scenario, with infergate / llama-server ratios.
pub fn side_by_side(set: &RunSet) -> String {
    let mut rows = Vec::new();
    for scenario in PEER_SCENARIOS.iter().filter(|s| set.has(s)) {
        let (ig, ll) = (set.series(scenario, "infergate"), set.series(scenario, "llama"));
        let label = format!("{scenario}: {}", describe(set, scenario));
        rows.push([vec![label, "infergate".into()], metric_cells(&ig)].concat());
        rows.push([vec![String::new(), "llama-server".into()], metric_cells(&ll)].concat());
        let mut ratios = vec![String::new(), "**ratio**".into()];
        for m in Metric::TABLE {
            ratios.push(if m == Metric::Errors {
                format!("{} vs {}", format::metric(agg(&ig, m), m), format::metric(agg(&ll, m), m))
            } else {
                format::ratio(ratio(agg(&ig, m), agg(&ll, m)))
            });
        }
        rows.push(ratios);
    }
    if rows.is_empty() {
        return not_measured(&PEER_SCENARIOS.join("`, `"));
    }
    format!(
        "({}; ratio = infergate / llama-server: above 1 is better for tok/s, below 1 for times and memory)\n\n{}",
        rounds_note(set),
        table(&headers_with(&["scenario", "server"]), &rows)
    )
}

/// The seed document's summary table: the ablation chain and the peer at the same load.
pub fn summary(set: &RunSet) -> String {
    let cell = |runs: &[&Run], m: Metric| format::metric(agg(runs, m), m);
    let mut rows = Vec::new();
    let mut before: Option<Agg> = None;
    for step in &ABLATION {
        let runs = set.series("ablation", step.kind);
        if runs.is_empty() {
            continue;
        }
        let tok = agg(&runs, Metric::TokS);
        let gain = before.map(|b| format!("; tok/s {} vs the row above", format::delta(Some(b), tok, Metric::TokS)));
        before = tok;
        rows.push(vec![
            step.title.to_string(),
            cell(&runs, Metric::TtftP95),
            cell(&runs, Metric::TpotP50),
            cell(&runs, Metric::TokS),
            "-".into(),
            format!("{}{}", step.knob, gain.unwrap_or_default()),
        ]);
    }
    let peer = set.series("seed", "llama");
    if !peer.is_empty() {
        rows.push(vec![
            "llama-server (peer)".into(),
            cell(&peer, Metric::TtftP95),
            cell(&peer, Metric::TpotP50),
            cell(&peer, Metric::TokS),
            "-".into(),
            "`seed` scenario, same load".into(),
        ]);
    }
    if rows.is_empty() {
        return not_measured("ablation");
    }
    let load = if set.has("ablation") { describe(set, "ablation") } else { describe(set, "seed") };
    let missing = if set.has("ablation") { String::new() } else { not_measured("ablation") + "\n" };
    format!(
        "{missing}({load}, CPU only: no VRAM; {})\n\n{}",
        rounds_note(set),
        table(&["Optimization", "TTFT P95 (ms)", "TPOT P50 (ms)", "Throughput (tok/s)", "VRAM (GB)", "Notes"], &rows)
    )
}

/// Issue 3's targets, judged on this run.
pub fn targets(set: &RunSet) -> String {
    let several = set.rounds() > 1;
    let mut rows = Vec::new();
    for t in &ISSUE3 {
        let o = evaluate(t, set);
        let compared = match t.rule {
            Rule::Below(_) | Rule::NoErrors => String::from("-"),
            _ => format!("{}: {}", kind_name(t.base), format::metric(o.base, t.metric)),
        };
        let mut verdict = o.verdict.label().to_string();
        if several && o.verdict != Verdict::NotMeasured && o.verdict != Verdict::Stated {
            verdict += &format!(" (held in {} of {} rounds)", o.rounds.0, o.rounds.1);
        }
        rows.push(vec![
            format!("{}: {}", t.scenario, describe(set, t.scenario)),
            t.metric.header().to_string(),
            format::metric(o.candidate, t.metric),
            compared,
            if matches!(t.rule, Rule::Below(_) | Rule::NoErrors) { "-".into() } else { format::ratio(o.ratio) },
            t.text.to_string(),
            verdict,
        ]);
    }
    format!(
        "(judged on {}; infergate with its defaults)\n\n{}",
        rounds_note(set),
        table(&["scenario", "metric", "infergate", "compared with", "ratio", "target", "result"], &rows)
    )
}

/// The seed document's goals, judged on this run.
pub fn goals(set: &RunSet) -> String {
    let rows: Vec<Vec<String>> = seed_goals(set)
        .into_iter()
        .map(|g| vec![g.text.to_string(), g.measured, g.verdict.label().to_string()])
        .collect();
    table(&["goal", "measured in this run", "result"], &rows)
}

/// Every run, one row per round (in the loader's document order): the raw material of the
/// tables above.
pub fn runs(set: &RunSet) -> String {
    let one = |r: &Run, m: Metric| m.of(&r.result).map_or_else(|| "-".into(), |v| format::metric(Agg::of(&[v]), m));
    let rows: Vec<Vec<String>> = set
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![r.scenario.clone(), kind_name(&r.kind).to_string(), r.round.to_string()];
            row.push(format!("{}", r.result.summary.count));
            row.extend(Metric::TABLE.iter().map(|m| one(r, *m)));
            row.push(one(r, Metric::ServerCpuPct));
            row.push(one(r, Metric::OtherCpuPct));
            row.push(format!("{:.0}", r.result.summary.wall_time_s));
            row
        })
        .collect();
    let mut headers = vec!["scenario", "server", "round", "requests"];
    headers.extend(Metric::TABLE.iter().map(|m| m.header()));
    headers.extend(["server CPU %", "other CPU %", "wall s"]);
    table(&headers, &rows)
}

/// What the prose shows for a number the run did not measure.
const NOT_AVAILABLE: &str = "n/a";

/// One number for the prose: the median (and spread) of a metric.
pub fn value(set: &RunSet, scenario: &str, kind: &str, m: Metric) -> String {
    match agg(&set.series(scenario, kind), m) {
        None => NOT_AVAILABLE.into(),
        a => format::metric(a, m),
    }
}

/// One ratio for the prose: candidate / base of the medians.
pub fn ratio_of(set: &RunSet, scenario: &str, candidate: &str, base: &str, m: Metric) -> String {
    match ratio(agg(&set.series(scenario, candidate), m), agg(&set.series(scenario, base), m)) {
        None => NOT_AVAILABLE.into(),
        r => format::ratio(r),
    }
}
