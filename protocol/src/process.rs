//! What every infergate binary does the same way: logging and the stop signal.
//!
//! Logs: `RUST_LOG` picks what is logged (each binary passes its default), `--log-format
//! text|json` (env `LOG_FORMAT`) how; logs go to stderr. The stop signal: SIGTERM (what the
//! kubelet sends) or Ctrl-C.

use tracing_subscriber::{fmt, EnvFilter};

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level (for log collectors).
    Json,
}

/// Installs the global subscriber: `RUST_LOG` when set, `default_filter` otherwise.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests that start twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The stop signals (SIGTERM, what the kubelet sends, and Ctrl-C), listened for from the moment
/// [`StopSignal::install`] returns: one that arrives before the first `recv` is kept, not
/// handled by its default action (which ends the process without any clean-up). A process
/// that tells another it is ready installs this first.
pub struct StopSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self { term: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves at the next stop signal.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {},
                _ = self.interrupt.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves at the first SIGTERM or Ctrl-C (from the first poll on; see [`StopSignal`] for a
/// listener installed before).
pub async fn shutdown_signal() {
    match StopSignal::install() {
        Ok(mut signals) => signals.recv().await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sigterm_sent_before_anyone_waits_is_kept_for_recv() {
        let mut signals = StopSignal::install().unwrap();
        // SAFETY: raise() sends a signal to this process; the handler installed above (tokio's)
        // takes it, so the default action (ending the process) never runs.
        let sent = unsafe { raise(SIGTERM) };
        assert_eq!(sent, 0);
        tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv()).await.expect("the signal was lost");
    }

    /// SIGTERM's number on every Unix tokio supports (no libc dependency for one constant).
    const SIGTERM: i32 = 15;

    extern "C" {
        /// C's `raise(3)`.
        fn raise(sig: i32) -> i32;
    }
}
