//! The document's header: what ran where (command, machine, git, model, server command lines,
//! rounds), and warnings that make a run's numbers suspect (QUICK, other processes busy).

use super::catalog::{kind_name, kind_rank};
use super::results::RunSet;

/// Runs with more of the machine than this going to other processes are flagged as contended.
pub const CONTENDED_OTHER_CPU_PCT: f64 = 5.0;

fn meta<'a>(set: &'a RunSet, key: &str) -> &'a str {
    set.meta.get(key).unwrap_or("unknown")
}

/// The date the run started, YYYY-MM-DD.
pub fn date(set: &RunSet) -> String {
    set.meta.get("started").and_then(|s| s.get(..10)).unwrap_or("date unknown").to_string()
}

/// Machine, command, model, servers, rounds, and warnings about the run's quality.
pub fn render(set: &RunSet) -> String {
    let mut facts = String::new();
    let dirty = if set.meta.get("git_dirty") == Some("yes") { " (with uncommitted changes)" } else { "" };
    facts += &format!(
        "- **Command**: `{}` (results: `{}/{}-*`), {} to {}, git {}{dirty}.\n",
        meta(set, "command"),
        set.meta.get("results_dir").unwrap_or("bench-results"),
        set.stamp,
        meta(set, "started"),
        meta(set, "finished"),
        meta(set, "git_commit"),
    );
    let mem = set.meta.get("mem_total_kib").and_then(|k| k.parse::<f64>().ok()).map(|k| k / 1024.0 / 1024.0);
    facts += &format!(
        "- **Machine**: {}, {} cores (SIMD: {}), {} GiB RAM, {}; {}.\n",
        meta(set, "cpu_model"),
        meta(set, "cores"),
        meta(set, "cpu_simd"),
        mem.map_or_else(|| "?".into(), |g| format!("{g:.0}")),
        meta(set, "kernel"),
        meta(set, "rustc"),
    );
    let model = set.meta.get("model").map(|m| m.rsplit('/').next().unwrap_or(m)).unwrap_or("unknown");
    facts += &format!(
        "- **Model**: `{model}`; prompts of ~{} tokens of fresh random words, {} output tokens.\n",
        meta(set, "prompt_tokens"),
        meta(set, "max_tokens"),
    );
    facts += &match set.rounds() {
        0 | 1 => "- **Rounds**: 1: one measurement per number, no spread; rerun with `ROUNDS=3` before relying on \
                  a ratio close to its target.\n"
            .to_string(),
        n => format!("- **Rounds**: {n}: every number is the median over the rounds, (min-max) its spread.\n"),
    };
    let mut servers = set.meta.servers();
    servers.sort_by_key(|(kind, _)| kind_rank(kind));
    if !servers.is_empty() {
        facts += "- **Servers** (exact commands; bench.sh adds `--host 127.0.0.1 --port <free port>`):\n";
        for (kind, cmd) in servers {
            facts += &format!("  - `{kind}` ({}): `{cmd}`\n", kind_name(kind));
        }
    }
    let mut paragraphs = vec![facts];
    if set.meta.get("quick") == Some("1") {
        paragraphs.push(
            "> **QUICK smoke run** (`QUICK=1`, request counts / 5): these numbers only show that the plumbing \
             works. Do not compare or commit them.\n"
                .into(),
        );
    }
    let contended: Vec<String> = set
        .runs
        .iter()
        .filter_map(|r| Some((r, r.result.cpu.other_cpu_pct_of_machine?)))
        .filter(|(_, pct)| *pct > CONTENDED_OTHER_CPU_PCT)
        .map(|(r, pct)| format!("{}/{}/r{} ({pct:.0} %)", r.scenario, r.kind, r.round))
        .collect();
    let worst = set.runs.iter().filter_map(|r| r.result.cpu.other_cpu_pct_of_machine).reduce(f64::max);
    if !contended.is_empty() {
        paragraphs.push(format!(
            "> **Contended**: other processes used more than {CONTENDED_OTHER_CPU_PCT:.0} % of the machine during \
             {} of {} runs: {}. Their numbers are suspect; rerun on a quiet machine.\n",
            contended.len(),
            set.runs.len(),
            contended.join(", ")
        ));
    } else if let Some(worst) = worst {
        paragraphs.push(format!(
            "Other processes used at most {worst:.1} % of the machine during any run (quiet: below \
             {CONTENDED_OTHER_CPU_PCT:.0} %).\n"
        ));
    }
    paragraphs.join("\n")
}
