//! Fault injection for rollout drills (tests and users' game days): which fault, if any, one
//! accepted generation request gets. Built once from the `--inject-*` flags.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::config::Config;

/// What an accepted generation request is subjected to, decided once on acceptance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Serve it normally.
    None,
    /// Answer 500 before any token (`--inject-error-rate`).
    Error,
    /// Hold it open and never answer until the client leaves (`--inject-hang-rate`).
    Hang,
    /// Wait this long before generating, so TTFT includes it (`--inject-ttft-delay-ms`).
    Delay(Duration),
    /// Exit the process with status 1 now (`--inject-crash-after-requests`).
    Crash,
}

/// The configured faults and the count of accepted generation requests.
#[derive(Debug)]
pub struct Faults {
    error_rate: f64,
    hang_rate: f64,
    ttft_delay: Duration,
    ttft_delay_after: Option<u64>,
    crash_after: Option<u64>,
    accepted: AtomicU64,
}

impl Faults {
    pub fn from_config(config: &Config) -> Self {
        Faults {
            error_rate: config.inject_error_rate,
            hang_rate: config.inject_hang_rate,
            ttft_delay: Duration::from_millis(config.inject_ttft_delay_ms),
            ttft_delay_after: config.inject_ttft_delay_after_requests,
            crash_after: config.inject_crash_after_requests,
            accepted: AtomicU64::new(0),
        }
    }

    /// Counts one accepted (validated) generation request and decides its fault.
    pub fn admit(&self) -> Fault {
        let sequence = self.accepted.fetch_add(1, Ordering::AcqRel) + 1;
        let mut rng = rand::rng();
        self.decide(sequence, rng.random::<f64>(), rng.random::<f64>())
    }

    /// The pure decision for the `sequence`-th accepted request (1-based) given two uniform
    /// draws in [0, 1): one for the error rate, one for the hang rate.
    ///
    /// The crash comes on acceptance of request N+1, not when the N-th finishes: a handler's
    /// return is not yet on the wire, so exiting then would cut the N-th answer; by the time
    /// N+1 is accepted a sequential client has read all N answers. Whatever else is in flight
    /// at that moment is cut, as a real crash would cut it.
    pub fn decide(&self, sequence: u64, error_draw: f64, hang_draw: f64) -> Fault {
        if self.crash_after.is_some_and(|n| sequence > n) {
            return Fault::Crash;
        }
        if error_draw < self.error_rate {
            return Fault::Error;
        }
        if hang_draw < self.hang_rate {
            return Fault::Hang;
        }
        let delayed = self.ttft_delay_after.is_none_or(|n| sequence > n);
        if !self.ttft_delay.is_zero() && delayed {
            return Fault::Delay(self.ttft_delay);
        }
        Fault::None
    }

    /// The `--inject-crash-after-requests` exit: logged, then status 1 without a drain, so the
    /// kubelet sees a crashed container (a restart), not a graceful stop.
    pub fn crash(&self) -> ! {
        let n = self.crash_after.unwrap_or(0);
        tracing::error!(after_requests = n, "injected crash (--inject-crash-after-requests); exiting with status 1");
        eprintln!("infergate-server: injected crash after {n} requests (--inject-crash-after-requests)");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn faults(args: &[&str]) -> Faults {
        let mut all = vec!["infergate-server", "--model", "/m.gguf"];
        all.extend_from_slice(args);
        let config = Config::try_parse_from(all).expect("flags parse");
        config.validate().expect("flags are valid");
        Faults::from_config(&config)
    }

    #[test]
    fn no_flags_no_faults() {
        let f = faults(&[]);
        for sequence in [1, 2, 1000] {
            assert_eq!(f.decide(sequence, 0.0, 0.0), Fault::None);
        }
    }

    #[test]
    fn crash_comes_with_the_request_after_the_nth() {
        let f = faults(&["--inject-crash-after-requests", "3"]);
        let decisions: Vec<Fault> = (1..=5).map(|n| f.decide(n, 0.9, 0.9)).collect();
        assert_eq!(decisions, [Fault::None, Fault::None, Fault::None, Fault::Crash, Fault::Crash]);
    }

    #[test]
    fn error_and_hang_rates_follow_their_draws() {
        let f = faults(&["--inject-error-rate", "0.25", "--inject-hang-rate", "0.5"]);
        assert_eq!(f.decide(1, 0.2, 0.9), Fault::Error);
        assert_eq!(f.decide(1, 0.3, 0.4), Fault::Hang);
        assert_eq!(f.decide(1, 0.3, 0.6), Fault::None);
        let always = faults(&["--inject-hang-rate", "1"]);
        assert_eq!(always.decide(7, 0.99, 0.999), Fault::Hang);
    }

    #[test]
    fn ttft_delay_applies_always_or_only_after_n_requests() {
        let always = faults(&["--inject-ttft-delay-ms", "300"]);
        assert_eq!(always.decide(1, 0.5, 0.5), Fault::Delay(Duration::from_millis(300)));
        let later = faults(&["--inject-ttft-delay-ms", "300", "--inject-ttft-delay-after-requests", "2"]);
        let decisions: Vec<Fault> = (1..=3).map(|n| later.decide(n, 0.5, 0.5)).collect();
        assert_eq!(decisions, [Fault::None, Fault::None, Fault::Delay(Duration::from_millis(300))]);
    }

    #[test]
    fn admit_counts_each_accepted_request() {
        let f = faults(&["--inject-ttft-delay-ms", "10", "--inject-ttft-delay-after-requests", "2"]);
        assert_eq!(f.admit(), Fault::None);
        assert_eq!(f.admit(), Fault::None);
        assert_eq!(f.admit(), Fault::Delay(Duration::from_millis(10)));
    }
}
