//! Shared pieces of the varco-web test suites: slow CPU references (f64), a seeded RNG, the harness that
//! poisons outputs and checks guards, and the kernel cases themselves — written once, run natively on
//! lavapipe (`tests/kernels.rs`) and in headless Chromium (`tests/browser.rs`).

pub mod cases;
#[cfg(not(target_arch = "wasm32"))]
pub mod fixtures;
pub mod harness;
pub mod reference;
