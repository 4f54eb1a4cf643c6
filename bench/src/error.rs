//! The crate's one error type: the load generator's setup errors and the BENCHMARKS.md
//! generator's input errors. Per-request failures are data (`RequestRecord::error`), not errors.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("http client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a run report: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("encoding the report: {0}")]
    Encode(serde_json::Error),
    #[error("{}: label `{label}` is not scenario/kind/rROUND", path.display())]
    Label { path: PathBuf, label: String },
    #[error("{}: line {line} is not `key<TAB>value`", path.display())]
    Meta { path: PathBuf, line: usize },
    #[error("no run reports for stamp {stamp} in {}", dir.display())]
    NoRuns { dir: PathBuf, stamp: String },
    #[error("no bench.sh run found in {}", dir.display())]
    NoStamp { dir: PathBuf },
    #[error("template: {0}")]
    Template(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
