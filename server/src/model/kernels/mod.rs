//! CPU compute kernels for the native forward pass.

pub mod attention;
pub mod disjoint;
pub mod pool;
pub mod q8;
