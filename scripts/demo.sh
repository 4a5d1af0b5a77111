#!/usr/bin/env bash
# The main job: builds the wasm engine, the npm package and the demo page, converts the tiny test model (the
# reference fixture: the real architecture and tokenizer, random weights) into the demo's default model,
# then serves the page and its model on localhost and prints the URL. Needs what scripts/setup.sh installs.
#
# The converted tiny model is committed (web/demo/public/models/tiny): without ../shared/fixtures the page
# serves that copy; with it, the conversion is redone and must give the same bytes (the converter is
# deterministic), so a changed format shows up here and in git.
#   PORT=8080 (default) · FIXTURES=../shared/fixtures
set -euo pipefail
cd "$(dirname "$0")/.."
port="${PORT:-8080}"
fixtures="${FIXTURES:-../shared/fixtures}/tiny-varco-a/model-hf"
model=web/demo/public/models/tiny

echo "== the wasm engine and the npm package"
bash scripts/build-web.sh

if [ -d "$fixtures" ]; then
    echo "== the tiny test model → $model (default plan: 4-bit LLM, 2 MiB shards)"
    cargo build --bin varco
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    target/debug/varco convert --input "$fixtures" --output "$tmp/tiny" --shard-mib 2
    if ! diff -rq "$tmp/tiny" "$model" >/dev/null 2>&1; then
        echo "   (the committed copy differed: replaced)"
        rm -rf "$model"
        cp -r "$tmp/tiny" "$model"
    fi
else
    echo "== no fixtures at $fixtures: the committed tiny model is served"
fi

echo "== the demo page (Vite)"
cd web/demo
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
echo
echo "   varco-web demo: http://127.0.0.1:$port/   (a tiny test model with random weights; ?manifest=URL for another)"
echo
exec node_modules/.bin/vite preview --host 127.0.0.1 --port "$port" --strictPort
