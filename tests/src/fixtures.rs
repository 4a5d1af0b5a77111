//! Access to the reference fixtures in `../shared/fixtures` (read-only; made by transformers). A missing
//! fixture is a failure, never a skip.

use std::path::PathBuf;

/// `shared/fixtures/tiny-varco-a`, beside the checkout (or `$VARCO_FIXTURES`).
pub fn root() -> PathBuf {
    let dir = std::env::var_os("VARCO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = dir.join("tiny-varco-a");
    assert!(p.is_dir(), "reference fixtures not found at {} (set VARCO_FIXTURES)", p.display());
    p
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Names of all cases.
pub fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("cases"))
        .expect("cases/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 10, "expected the fixture cases, found {v:?}");
    v
}

/// Tensors of a case's expected.safetensors.
pub fn expected(case: &str) -> std::collections::HashMap<String, candle_core::Tensor> {
    let p = root().join("cases").join(case).join("expected.safetensors");
    candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
