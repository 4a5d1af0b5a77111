#!/usr/bin/env bash
# On the lent GPU machine, from the repository root with .device/ carried (pack-for-device.sh): unpacks Node,
# Dawn for Node, `varco` and web/pkg-bench, then runs run.mjs with the native build first, passing the
# arguments on (e.g. --shape 14b --runs 3 --f16-on-nvidia --out $OUT/wasm-vs-native.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /opt/varco-node scripts/bench-wasm/node_modules
tar -xJf .device/node.tar.xz -C /opt/varco-node
rm -rf scripts/bench-wasm/node_modules/webgpu
tar -xJf .device/webgpu.tar.xz -C scripts/bench-wasm/node_modules && mv scripts/bench-wasm/node_modules/package scripts/bench-wasm/node_modules/webgpu
xz -dc .device/varco.xz > /opt/varco-node/varco && chmod +x /opt/varco-node/varco
rm -rf web/pkg-bench && tar -xJf .device/pkg-bench.tar.xz -C web
/opt/varco-node/bin/node scripts/bench-wasm/run.mjs --native /opt/varco-node/varco "$@"
