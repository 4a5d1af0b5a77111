#!/usr/bin/env bash
# The test command: train/'s data and scoring tests, native tests (GPU-free shader validation, the weight formats, references, every
# kernel and the model on the Vulkan adapter — lavapipe on a machine without a GPU, the converter), then the
# wasm build in headless Chromium through wasm-bindgen-test, then the npm package (web/) end to end in
# Chromium with a local server as the CDN, then the demo page (web/demo) and `npm pack` into a fresh Vite
# app. Needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"          # else a GL llvmpipe adapter shows up beside lavapipe
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== train/: scenes, answers, scoring"
python3 -m unittest discover -s train -p 'test_*.py'

echo "== native tests"
cargo test --workspace

echo "== browser tests (headless Chromium, WebGPU)"
cd tests
# the timeout covers the whole suite, not one test: ≈ 4 minutes on an idle 2-core machine; a busy CI machine
# once passed 300 s with 24 of the 25 tests done
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner WASM_BINDGEN_TEST_TIMEOUT=1200 \
    cargo test --target wasm32-unknown-unknown -p varco-tests --test browser
cd ..

echo "== the npm package in headless Chromium"
bash scripts/build-web.sh --test-hooks
cargo build --bin varco   # converts the test model (the native tests built it already: instant)
(cd web && VARCO_BIN="$PWD/../target/debug/varco" npm test)

echo "== the demo page in headless Chromium, and the package in a fresh Vite app"
(cd web/demo && npm run build --silent && VITE_VARCO_TEST_HOOKS=1 node_modules/.bin/vite build --logLevel error \
    && VARCO_BIN="$PWD/../../target/debug/varco" npm test)
