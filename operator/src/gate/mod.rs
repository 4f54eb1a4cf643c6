//! The gate: measures a revision over an analysis window and judges it.
//!
//! Pure parts: [`exposition`] (reading `/metrics`), [`quantile`] (Prometheus'
//! `histogram_quantile`), [`sample`] (window deltas), [`verdict`] (SLO, sample guard, baseline),
//! [`promql`] (the queries of the Prometheus source). Runtime parts: [`pods`] (which pods to
//! measure), [`direct`] and [`prometheus`] (the two sources), [`probe`] (bounded synthetic load)
//! and [`runner`] (one background job per resource, reported back to the reconciler).

pub mod direct;
pub mod exposition;
pub mod pods;
pub mod probe;
pub mod prometheus;
pub mod promql;
pub mod quantile;
pub mod runner;
pub mod sample;
pub mod verdict;

pub use runner::{Gate, GateJob, GateObservation, JobKind, LiveGate};
