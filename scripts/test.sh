#!/usr/bin/env bash
# The test command: native tests (GPU-free shader validation, the 4-bit format, references, and every
# kernel on the Vulkan adapter — lavapipe on a machine without a GPU), then the kernels' f32 paths in
# headless Chromium through wasm-bindgen-test. Needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"          # else a GL llvmpipe adapter shows up beside lavapipe
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== native tests"
cargo test --workspace

echo "== browser tests (headless Chromium, WebGPU)"
cd tests
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner WASM_BINDGEN_TEST_TIMEOUT=300 \
    cargo test --target wasm32-unknown-unknown -p varco-tests --test browser
