//! Structured logs, set up as in every infergate binary (`infergate_protocol::process`).

pub use infergate_protocol::process::LogFormat;

/// The operator's default filter when `RUST_LOG` is unset: the kube crates are chatty at info.
pub const DEFAULT_FILTER: &str = "info,kube=warn,kube_lease_manager=warn";

/// Installs the global subscriber; `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    infergate_protocol::process::init_logging(format, DEFAULT_FILTER);
}
