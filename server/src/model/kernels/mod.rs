//! CPU compute kernels for the native forward pass.

pub mod pool;
pub mod q8;
