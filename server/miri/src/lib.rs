//! `server/src/model/kernels` compiled on its own so `cargo +nightly miri test` can run its
//! tests (the q8 matmul through the portable kernel, and the compute pool) quickly. The
//! kernels use only `std` and reach each other by relative paths, which is what makes this
//! include work; see DEVELOPERS.md for what Miri covers and what it cannot.

#[path = "../../src/model/kernels/mod.rs"]
pub mod kernels;
