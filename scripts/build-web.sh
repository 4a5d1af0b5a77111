#!/usr/bin/env bash
# Builds the npm package in web/: the crate for wasm32 (release), wasm-bindgen's ES module into web/pkg,
# then the TypeScript into web/dist. With --test-hooks, also the engine with its test hooks (a device loss
# on demand) into web/pkg-test, which only the browser tests serve. With --bench, the engine with the model
# benchmark (`benchModel`) into web/pkg-bench, for scripts/bench-wasm/run.mjs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-unknown-unknown -p varco-web --lib --no-default-features
wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/release/varco_web.wasm
if [ "${1:-}" = "--test-hooks" ]; then
    cargo build --release --target wasm32-unknown-unknown -p varco-web --lib --no-default-features --features test-hooks --target-dir target/test-hooks
    wasm-bindgen --target web --out-dir web/pkg-test target/test-hooks/wasm32-unknown-unknown/release/varco_web.wasm
fi
if [ "${1:-}" = "--bench" ]; then
    cargo build --release --target wasm32-unknown-unknown -p varco-web --lib --no-default-features --features bench --target-dir target/bench
    wasm-bindgen --target web --out-dir web/pkg-bench target/bench/wasm32-unknown-unknown/release/varco_web.wasm
fi
cd web
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
