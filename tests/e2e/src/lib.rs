//! infergate's end-to-end harness: a real Kubernetes control plane built from Go modules,
//! a pod runner that plays kubelet for KWOK nodes by starting real infergate processes on
//! loopback addresses, and the scenarios that prove gated rollouts against them.

pub mod cluster;
pub mod error;
pub mod kubectl;
pub mod pod_runner;
pub mod ports;
pub mod process;
pub mod scenarios;
pub mod services;
pub mod wait;
