//! Pure judging of analysis windows, shared by the gate (which measures) and the rollout state
//! machine (which decides): [`sample`] (one revision's window and which statuses are errors),
//! [`quantile`] (Prometheus' `histogram_quantile`), [`report`] (a finished window) and
//! [`verdict`] (SLO, sample guard, baseline). Nothing here does I/O.

pub mod quantile;
pub mod report;
pub mod sample;
pub mod verdict;

pub use report::WindowReport;
pub use sample::Sample;
pub use verdict::{judge, judge_window, Judgement};
