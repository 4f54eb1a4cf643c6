//! Pure judging of analysis windows, shared by the gate (which measures) and the rollout state
//! machine (which decides): [`sample`] (one revision's window and which statuses are errors),
//! [`probe_window`] (the probe's client-side view), [`quantile`] (Prometheus'
//! `histogram_quantile`, sample quantiles), [`mann_whitney`] (the regression test), [`report`]
//! (a finished window), [`verdict`] (SLO, health, sample guard, baseline) and [`work`] (what the
//! rollout asks the gate to do). Nothing here does I/O.

pub mod mann_whitney;
pub mod probe_window;
pub mod quantile;
pub mod report;
pub mod sample;
pub mod verdict;
pub mod work;

pub use probe_window::{FailureCounts, ProbeOutcome, ProbeWindow};
pub use report::WindowReport;
pub use sample::Sample;
pub use verdict::{judge, judge_window, Judgement};
pub use work::{GateWork, WindowWork};
