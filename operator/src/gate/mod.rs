//! The gate: measures a revision over an analysis window and judges it.
//!
//! Pure parts: [`exposition`] (reading `/metrics`), [`window_delta`] (the Direct source's
//! window), [`promql`] (the queries of the Prometheus source); judging lives in
//! [`crate::analysis`]. Runtime parts: [`pods`] (which pods to
//! measure), [`direct`] and [`prometheus`] (the two sources), [`probe`] (bounded synthetic load)
//! and [`runner`] (one background job per resource, reported back to the reconciler).

pub mod direct;
pub mod exposition;
pub mod pods;
pub mod probe;
pub mod prometheus;
pub mod promql;
pub mod runner;
pub mod window_delta;

pub use runner::{Gate, GateJob, GateObservation, JobKind, LiveGate};
