//! Reading one `scripts/bench.sh` run back: the per-run JSON reports `STAMP-*-rN.json` (read
//! through the type that wrote them, [`RunReport`]; extra fields are ignored) and the run's `STAMP-meta.tsv` (machine,
//! command, server command lines), written by bench.sh as `key<TAB>value` lines.

use std::collections::BTreeMap;
use std::path::Path;

use super::catalog::{kind_rank, scenario_rank};
use crate::error::{Error, Result};
use crate::run_report::RunReport;

/// One measured run: which scenario, which server configuration ("kind"), which round.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub scenario: String,
    pub kind: String,
    pub round: u32,
    pub result: RunReport,
}

/// `scenario/kind/rN` -> its parts (bench.sh's label format).
pub fn parse_label(label: &str) -> Option<(String, String, u32)> {
    let mut parts = label.split('/');
    let (scenario, kind, round) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || scenario.is_empty() || kind.is_empty() {
        return None;
    }
    let round = round.strip_prefix('r')?.parse().ok()?;
    Some((scenario.to_string(), kind.to_string(), round))
}

/// The run's `key<TAB>value` facts. Blank lines are skipped; a key given twice keeps the last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta(BTreeMap<String, String>);

impl Meta {
    /// Parses the text; `Err(line number)` (1-based) for a line without a tab.
    pub fn parse(text: &str) -> Result<Meta, usize> {
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.split_once('\t').ok_or(i + 1)?;
            map.insert(key.trim().to_string(), value.trim().to_string());
        }
        Ok(Meta(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `server.KIND` entries: the exact command each server configuration ran with.
    pub fn servers(&self) -> Vec<(&str, &str)> {
        self.0.iter().filter_map(|(k, v)| Some((k.strip_prefix("server.")?, v.as_str()))).collect()
    }
}

/// Everything one bench.sh run (one stamp) left behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSet {
    pub stamp: String,
    pub meta: Meta,
    pub runs: Vec<Run>,
}

impl RunSet {
    /// Runs of one scenario and kind, in round order.
    pub fn series(&self, scenario: &str, kind: &str) -> Vec<&Run> {
        let mut runs: Vec<&Run> = self.runs.iter().filter(|r| r.scenario == scenario && r.kind == kind).collect();
        runs.sort_by_key(|r| r.round);
        runs
    }

    pub fn has(&self, scenario: &str) -> bool {
        self.runs.iter().any(|r| r.scenario == scenario)
    }

    /// Rounds in the run (the largest round number seen).
    pub fn rounds(&self) -> u32 {
        self.runs.iter().map(|r| r.round).max().unwrap_or(0)
    }

    /// Loads the run `stamp` (the newest in `dir` when `None`) from a bench.sh results folder.
    pub fn load(dir: &Path, stamp: Option<&str>) -> Result<RunSet> {
        let names = list_dir(dir)?;
        let stamp = match stamp {
            Some(s) => s.to_string(),
            None => newest_stamp(&names).ok_or_else(|| Error::NoStamp { dir: dir.to_path_buf() })?,
        };
        let mut set = RunSet { stamp: stamp.clone(), ..Default::default() };
        let meta_path = dir.join(format!("{stamp}-meta.tsv"));
        if meta_path.exists() {
            let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
            set.meta = Meta::parse(&text).map_err(|line| Error::Meta { path: meta_path.clone(), line })?;
        }
        for name in names.iter().filter(|n| is_run_file(n, &stamp)) {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let result: RunReport =
                serde_json::from_str(&text).map_err(|source| Error::Json { path: path.clone(), source })?;
            let (scenario, kind, round) = parse_label(&result.label)
                .ok_or_else(|| Error::Label { path: path.clone(), label: result.label.clone() })?;
            set.runs.push(Run { scenario, kind, round, result });
        }
        if set.runs.is_empty() {
            return Err(Error::NoRuns { dir: dir.to_path_buf(), stamp });
        }
        // The document's order: scenarios as listed in the catalog, then kind and round.
        set.runs.sort_by(|a, b| {
            let key =
                |r: &Run| (scenario_rank(&r.scenario), r.scenario.clone(), kind_rank(&r.kind), r.kind.clone(), r.round);
            key(a).cmp(&key(b))
        });
        Ok(set)
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// `STAMP-<scenario>-<kind>-r<N>.json` (the warm-up reports live in logs/, never here).
fn is_run_file(name: &str, stamp: &str) -> bool {
    let Some(rest) = name.strip_prefix(stamp).and_then(|r| r.strip_prefix('-')) else { return false };
    let Some(body) = rest.strip_suffix(".json") else { return false };
    body.rsplit_once("-r").is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// bench.sh stamps are `YYYYMMDDTHHMMSSZ` (UTC), so the newest sorts last.
fn newest_stamp(names: &[String]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| n.get(..16))
        .filter(|s| s.as_bytes()[8] == b'T' && s.ends_with('Z') && s[..8].bytes().all(|b| b.is_ascii_digit()))
        .filter(|s| names.iter().any(|n| is_run_file(n, s)))
        .max()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse_label("seed/infergate/r2"), Some(("seed".into(), "infergate".into(), 2)));
        assert_eq!(parse_label("ablation/native-b256/r10"), Some(("ablation".into(), "native-b256".into(), 10)));
        assert_eq!(parse_label("seed/infergate"), None);
        assert_eq!(parse_label("seed/infergate/2"), None);
        assert_eq!(parse_label("seed/infergate/r1/x"), None);
        assert_eq!(parse_label("warmup"), None);
    }

    #[test]
    fn meta_lines_and_servers() {
        let m =
            Meta::parse("cores\t2\n\nserver.llama\tllama-server -np 32\nserver.infergate\tinfergate-server\nempty\t\n")
                .unwrap();
        assert_eq!(m.get("cores"), Some("2"));
        assert_eq!(m.get("empty"), None);
        assert_eq!(m.servers(), vec![("infergate", "infergate-server"), ("llama", "llama-server -np 32")]);
        assert_eq!(Meta::parse("ok\tfine\nbroken line\n"), Err(2));
    }

    #[test]
    fn run_files_and_newest_stamp() {
        let s = "20261128T064451Z";
        assert!(is_run_file(&format!("{s}-seed-infergate-r1.json"), s));
        assert!(is_run_file(&format!("{s}-ablation-native-b256-r12.json"), s));
        assert!(!is_run_file(&format!("{s}-summary.md"), s));
        assert!(!is_run_file(&format!("{s}-warmup.json"), s));
        assert!(!is_run_file("20261128T055657Z-seed-infergate-r1.json", s));
        let names: Vec<String> = [
            "20261128T055657Z-seed-llama-r1.json",
            "20261128T064451Z-seed-llama-r1.json",
            "20261129T000000Z-meta.tsv", // a run that left no results yet
            "summary.md",
            "logs",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(newest_stamp(&names).as_deref(), Some(s));
        assert_eq!(newest_stamp(&["summary.md".to_string()]), None);
    }

    #[test]
    fn loads_a_results_folder() {
        let dir = std::env::temp_dir().join(format!("infergate-bench-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stamp = "20261201T000000Z";
        let run = |label: &str, toks: f64| {
            format!(
                r#"{{"label":"{label}","count":5,"errors":0,"output_tokens_per_s":{toks},"ttft_ms":{{"p50":1.0,"p95":2.0}},"extra":1}}"#
            )
        };
        std::fs::write(dir.join(format!("{stamp}-seed-infergate-r2.json")), run("seed/infergate/r2", 20.0)).unwrap();
        std::fs::write(dir.join(format!("{stamp}-seed-infergate-r1.json")), run("seed/infergate/r1", 10.0)).unwrap();
        std::fs::write(dir.join(format!("{stamp}-meta.tsv")), "cores\t2\n").unwrap();
        let set = RunSet::load(&dir, None).unwrap();
        assert_eq!(set.stamp, stamp);
        assert_eq!(set.meta.get("cores"), Some("2"));
        let series: Vec<f64> =
            set.series("seed", "infergate").iter().map(|r| r.result.summary.output_tokens_per_s).collect();
        assert_eq!(series, vec![10.0, 20.0]);
        std::fs::write(
            dir.join(format!("{stamp}-ablation-candle-nobatch-r1.json")),
            run("ablation/candle-nobatch/r1", 5.0),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{stamp}-ablation-native-r1.json")), run("ablation/native/r1", 5.0)).unwrap();
        std::fs::write(dir.join(format!("{stamp}-seed-llama-r1.json")), run("seed/llama/r1", 5.0)).unwrap();
        let order: Vec<String> =
            RunSet::load(&dir, None).unwrap().runs.iter().map(|r| r.result.label.clone()).collect();
        assert_eq!(
            order,
            [
                "seed/infergate/r1",
                "seed/infergate/r2",
                "seed/llama/r1",
                "ablation/candle-nobatch/r1",
                "ablation/native/r1"
            ]
        );
        assert_eq!(set.rounds(), 2);
        assert!(matches!(RunSet::load(&dir, Some("20200101T000000Z")), Err(Error::NoRuns { .. })));
        std::fs::write(dir.join(format!("{stamp}-seed-llama-r1.json")), run("bad-label", 1.0)).unwrap();
        assert!(matches!(RunSet::load(&dir, Some(stamp)), Err(Error::Label { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
