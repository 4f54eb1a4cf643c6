//! BENCHMARKS.md from one `scripts/bench.sh` run: the run's JSON reports and meta file are read
//! back (`results`), aggregated over rounds (`aggregate`), judged against the targets
//! (`targets`) and written into the prose of a template (`template`, `sections`).

pub mod aggregate;
pub mod catalog;
pub mod format;
pub mod header;
pub mod results;
pub mod sections;
pub mod targets;
pub mod template;

use crate::error::{Error, Result};
use aggregate::Metric;
use results::RunSet;

/// The narrative of BENCHMARKS.md (`bench/templates/BENCHMARKS.md.tmpl`).
pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/BENCHMARKS.md.tmpl");

/// The placeholders a template may use, for error messages.
const PLACEHOLDERS: &str = "header, date, run SCENARIO KIND, delta SCENARIO BEFORE AFTER, side_by_side, summary, \
targets, goals, runs, value SCENARIO KIND METRIC, ratio SCENARIO CANDIDATE BASE METRIC";

/// Renders `template` with the numbers of `set`.
pub fn render(set: &RunSet, template: &str) -> Result<String> {
    let metric = |key: &str| {
        Metric::from_key(key).ok_or_else(|| {
            Error::Template(format!(
                "unknown metric `{key}` (tok_s, ttft_p50, ttft_p95, tpot_p50, errors, rss, server_cpu, other_cpu)"
            ))
        })
    };
    template::fill(template, |name, args| match (name, args) {
        ("header", []) => Ok(header::render(set)),
        ("date", []) => Ok(header::date(set)),
        ("run", [scenario, kind]) => Ok(sections::run_list(set, scenario, kind)),
        ("delta", [scenario, before, after]) => Ok(sections::delta(set, scenario, before, after)),
        ("side_by_side", []) => Ok(sections::side_by_side(set)),
        ("summary", []) => Ok(sections::summary(set)),
        ("targets", []) => Ok(sections::targets(set)),
        ("goals", []) => Ok(sections::goals(set)),
        ("runs", []) => Ok(sections::runs(set)),
        ("value", [scenario, kind, m]) => Ok(sections::value(set, scenario, kind, metric(m)?)),
        ("ratio", [scenario, candidate, base, m]) => Ok(sections::ratio_of(set, scenario, candidate, base, metric(m)?)),
        _ => Err(Error::Template(format!(
            "unknown placeholder `{name}` with {} arguments; known: {PLACEHOLDERS}",
            args.len()
        ))),
    })
}

#[cfg(test)]
mod tests {
    use super::aggregate::tests::run;
    use super::results::{Meta, Run, RunSet};
    use super::*;

    /// A two-round run of every scenario, llama-server slower everywhere but the single stream.
    fn fixture() -> RunSet {
        let mut runs = Vec::new();
        for round in 1..=2 {
            let jitter = if round == 1 { 0.95 } else { 1.05 };
            let mut add = |scenario: &str, kind: &str, tok: f64, ttft95: f64| {
                runs.push(run(scenario, kind, round, tok * jitter, ttft95 * jitter, 0));
            };
            add("seed", "infergate", 200.0, 1600.0);
            add("seed", "llama", 115.0, 3100.0);
            add("c32", "infergate", 230.0, 4200.0);
            add("c32", "llama", 146.0, 10000.0);
            add("single", "infergate", 80.0, 200.0);
            add("single", "llama", 100.0, 300.0);
            add("open", "infergate", 126.0, 307.0);
            add("open", "llama", 123.0, 846.0);
            add("batching", "infergate-nobatch", 100.0, 11900.0);
            add("batching", "infergate", 200.0, 1700.0);
            add("ablation", "candle-nobatch", 50.0, 20000.0);
            add("ablation", "native-nobatch", 100.0, 11900.0);
            add("ablation", "native", 200.0, 1600.0);
            add("ablation", "native-b256", 220.0, 1500.0);
        }
        let mut open: Vec<&mut Run> = runs.iter_mut().filter(|r| r.scenario == "open").collect();
        for r in open.iter_mut() {
            r.result.params.concurrency = None;
            r.result.params.rate = Some(1.0);
            r.result.params.requests = 40;
        }
        let meta = Meta::parse(
            "command\tSCENARIOS=seed scripts/bench.sh\nstarted\t2026-12-01 10:00:00 UTC\ncpu_model\tAMD EPYC\n\
             cores\t2\nquick\t0\nserver.native-b256\tinfergate-server --q8-block-columns 256\n",
        )
        .unwrap();
        RunSet { stamp: "20261201T100000Z".into(), meta, runs }
    }

    #[test]
    fn default_template_renders_every_section() {
        let doc = render(&fixture(), DEFAULT_TEMPLATE).unwrap();
        assert!(!doc.contains("{{"), "placeholder left:\n{doc}");
        assert!(
            doc.contains("`SCENARIOS=seed scripts/bench.sh` (results: `bench-results/20261201T100000Z-*`)"),
            "{doc}"
        );
        assert!(doc.contains("AMD EPYC, 2 cores"), "machine in the header");
        assert!(doc.contains("infergate-server --q8-block-columns 256"), "server commands");
        assert!(doc.contains("2026-12-01"), "date in the section titles");
        // Medians of 0.95x and 1.05x are the nominal values; spreads are shown.
        assert!(doc.contains("| before: candle, batching off | 50.0 (47.5-52.5) |"), "{doc}");
        assert!(doc.contains("**+100 % (2.00x)**"), "native backend doubles tok/s:\n{doc}");
        // Ratios of medians: 200 / 115 and 80 / 100 TPOT inverse.
        assert!(doc.contains("| **ratio** | 1.74x |"), "{doc}");
        assert!(!doc.contains("QUICK smoke run"));
        assert!(!doc.contains("Not measured in this run"));
    }

    #[test]
    fn targets_table_says_met_and_not_met() {
        let doc = sections::targets(&fixture());
        // seed tok/s 1.74x >= 1.2x in both rounds.
        assert!(doc.contains("| tok/s >= 1.2x llama-server | **met** (held in 2 of 2 rounds) |"), "{doc}");
        // single TPOT: infergate 1000/80 = 12.5 ms vs 10 ms: 1.25x > 1.1x.
        assert!(
            doc.contains("| 1.25x | TPOT P50 <= 1.1x llama-server | **not met** (held in 0 of 2 rounds) |"),
            "{doc}"
        );
        assert!(doc.contains("| 2.00x | the gain of batching on over off, stated | stated |"), "{doc}");
    }

    #[test]
    fn partial_quick_contended_run_says_so() {
        let mut set = fixture();
        set.runs.retain(|r| r.scenario == "seed" && r.round == 1);
        set.runs[0].result.cpu.other_cpu_pct_of_machine = Some(37.0);
        set.meta = Meta::parse("quick\t1\n").unwrap();
        let doc = render(&set, DEFAULT_TEMPLATE).unwrap();
        assert!(doc.contains("QUICK smoke run"));
        assert!(doc.contains("**Contended**") && doc.contains("seed/infergate/r1 (37 %)"), "{doc}");
        assert!(doc.contains("scenario `ablation` was not selected"));
        assert!(
            doc.contains(
                "| c32: not run | tok/s | - | llama-server: - | - | tok/s >= 1.2x llama-server | not measured |"
            ),
            "{doc}"
        );
        assert!(doc.contains("command unknown") || doc.contains("`unknown`"), "missing meta is named");
        // One round: no spread.
        assert!(doc.contains("| seed: 10 concurrent, 50 requests | infergate | 190 |"), "{doc}");
    }

    #[test]
    fn placeholders_and_metrics_are_checked() {
        let set = fixture();
        assert_eq!(render(&set, "{{value seed infergate tok_s}}").unwrap(), "200 (190-210)");
        assert_eq!(render(&set, "{{ratio seed infergate llama tok_s}}").unwrap(), "1.74x");
        assert!(render(&set, "{{value seed infergate vram}}").unwrap_err().to_string().contains("unknown metric"));
        assert!(render(&set, "{{summary extra}}").unwrap_err().to_string().contains("unknown placeholder"));
        assert!(render(&set, "{{nosuch}}").is_err());
        assert_eq!(render(&set, "{{value c32 native rss}} {{ratio c32 native llama tok_s}}").unwrap(), "n/a n/a");
    }

    #[test]
    fn summary_table_follows_the_ablation_chain() {
        let doc = sections::summary(&fixture());
        let order: Vec<usize> =
            ["Baseline: candle", "+ native 8-bit", "+ continuous batching", "+ 256-column", "llama-server (peer)"]
                .iter()
                .map(|t| doc.find(t).unwrap_or_else(|| panic!("{t} missing:\n{doc}")))
                .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{doc}");
        assert!(doc.contains("tok/s +10 % (1.10x) vs the row above"), "{doc}");
    }
}
