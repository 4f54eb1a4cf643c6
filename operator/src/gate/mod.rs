//! The gate: measures a revision over an analysis window; judging lives in [`crate::analysis`].
//!
//! Pure parts: [`exposition`] (reading `/metrics`), [`window_delta`] (the Direct source's
//! window), [`promql`] (the queries of the Prometheus source), [`sse`] (reading a streamed
//! answer), [`pods::window_health`]. Runtime parts: [`pods`] (which pods to measure, their
//! state), [`source`] (the one interface of the metrics sources) with [`direct`] and
//! [`prometheus`] behind it, [`spec_source`] (the one the spec chose, built in one place),
//! [`probe`] (bounded synthetic load) and [`runner`] (one background
//! job per resource, reported back to the reconciler).

pub mod direct;
pub mod exposition;
pub mod pods;
pub mod probe;
pub mod prometheus;
pub mod promql;
pub mod runner;
pub mod source;
pub mod spec_source;
pub mod window_delta;

pub use runner::{Gate, GateJob, GateObservation, LiveGate};
