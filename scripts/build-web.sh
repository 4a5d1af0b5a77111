#!/usr/bin/env bash
# Builds the npm package in web/: the crate for wasm32 (release), wasm-bindgen's ES module into web/pkg,
# then the TypeScript into web/dist.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-unknown-unknown -p varco-web --lib --no-default-features
wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/release/varco_web.wasm
cd web
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
