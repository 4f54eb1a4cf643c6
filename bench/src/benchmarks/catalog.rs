//! What the scenarios and server configurations ("kinds") of `scripts/bench.sh` are, for the
//! document: their order, their names, and the ablation chain. The exact server command lines
//! come from the run itself (`server.KIND` in the run's meta file).

/// Scenarios in the order the document lists them.
pub const SCENARIOS: [&str; 6] = ["seed", "c32", "single", "open", "batching", "ablation"];

/// Scenarios where infergate (defaults) and llama-server take turns.
pub const PEER_SCENARIOS: [&str; 4] = ["seed", "c32", "single", "open"];

/// One step of the ablation: a server configuration and the knob that distinguishes it from
/// the step before.
pub struct Step {
    pub kind: &'static str,
    pub title: &'static str,
    pub knob: &'static str,
}

/// The `ablation` scenario's chain, baseline first: each step turns one real knob.
pub const ABLATION: [Step; 4] = [
    Step {
        kind: "candle-nobatch",
        title: "Baseline: candle backend, batching off",
        knob: "`--backend candle --enable-batching false`",
    },
    Step { kind: "native-nobatch", title: "+ native 8-bit backend", knob: "`--backend native`" },
    Step { kind: "native", title: "+ continuous batching (today's default)", knob: "`--enable-batching true`" },
    Step { kind: "native-b256", title: "+ 256-column scale blocks (opt-in)", knob: "`--q8-block-columns 256`" },
];

/// Every kind bench.sh starts.
pub const KINDS: [&str; 7] =
    ["infergate", "llama", "infergate-nobatch", "candle-nobatch", "native-nobatch", "native", "native-b256"];

/// How a kind is named in tables.
pub fn kind_name(kind: &str) -> &str {
    match kind {
        "infergate" => "infergate",
        "llama" => "llama-server",
        "infergate-nobatch" => "infergate, batching off",
        "candle-nobatch" => "candle, batching off",
        "native-nobatch" => "native, batching off",
        "native" => "native, batching on",
        "native-b256" => "native, batching on, 256-column blocks",
        other => other,
    }
}

/// Position of a scenario in the document (unknown ones last, by name).
pub fn scenario_rank(scenario: &str) -> usize {
    SCENARIOS.iter().position(|s| *s == scenario).unwrap_or(SCENARIOS.len())
}

/// Position of a kind in tables (the ablation in chain order; unknown ones last, by name).
pub fn kind_rank(kind: &str) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's knowledge of kinds and scenarios must match the script that runs them.
    #[test]
    fn bench_script_knows_every_kind_and_scenario() {
        let script = include_str!("../../../scripts/bench.sh");
        for kind in KINDS {
            assert!(script.contains(&format!("    {kind})")), "scripts/bench.sh has no server kind `{kind}`");
        }
        for scenario in SCENARIOS {
            assert!(script.contains(&format!("    {scenario})")), "scripts/bench.sh has no scenario `{scenario}`");
        }
        for step in &ABLATION {
            assert!(KINDS.contains(&step.kind));
        }
    }

    #[test]
    fn names_and_order() {
        assert_eq!(kind_name("llama"), "llama-server");
        assert_eq!(kind_name("custom"), "custom");
        assert!(scenario_rank("seed") < scenario_rank("ablation"));
        assert_eq!(scenario_rank("other"), SCENARIOS.len());
        let mut chain: Vec<&str> = ABLATION.iter().rev().map(|s| s.kind).collect();
        chain.sort_by_key(|k| kind_rank(k));
        assert_eq!(chain, ABLATION.iter().map(|s| s.kind).collect::<Vec<_>>());
    }
}
