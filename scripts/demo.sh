#!/usr/bin/env bash
# The main job: builds the wasm engine, the npm package and the demo page, then serves the page and its default
# model on localhost and prints the URL. Needs what scripts/setup.sh installs.
#
# The default model is committed (web/demo/public/models/small): the small model train/ trained on synthetic
# shapes and signs (train/README.md), converted to 4 bits. Its training checkpoint is not in the repository;
# tests/trained.rs checks the committed files against transformers' answers on the same weights.
#   PORT=8080 (default)
set -euo pipefail
cd "$(dirname "$0")/.."
port="${PORT:-8080}"

echo "== the wasm engine and the npm package"
bash scripts/build-web.sh

echo "== the demo page (Vite)"
cd web/demo
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
echo
echo "   varco-web demo: http://127.0.0.1:$port/   (the small trained model: shapes, not yet text; ?manifest=URL for another)"
echo
exec node_modules/.bin/vite preview --host 127.0.0.1 --port "$port" --strictPort
