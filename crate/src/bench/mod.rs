//! Benchmarks, never tests: `varco bench kernels` (every kernel at the 14B's shapes; native) and `varco bench
//! model` (the whole model through the session; native, and compiled to wasm with the `bench` feature for
//! the browser's WebGPU: `scripts/bench-wasm.mjs`).

#[cfg(not(target_arch = "wasm32"))]
mod kernels;
#[cfg(not(target_arch = "wasm32"))]
pub use kernels::*;

pub mod model;
