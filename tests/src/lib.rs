//! Shared pieces of the varco-web test suites: slow CPU references (f64), a seeded RNG, the harness that
//! poisons outputs and checks guards, and the kernel cases themselves — written once, run natively on
//! lavapipe (`tests/kernels.rs`) and in headless Chromium (`tests/browser.rs`).

pub mod cases;
pub mod harness;
pub mod reference;
