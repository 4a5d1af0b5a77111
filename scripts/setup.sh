#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent): Mesa lavapipe (a CPU Vulkan driver,
# the native tests' GPU), Chromium and ChromeDriver (the browser tests' WebGPU, on SwiftShader), a Hangul
# font (fonts-nanum) and DejaVu, Pillow and NumPy (train/'s tests), the
# wasm32 target, and wasm-bindgen-cli at exactly the wasm-bindgen version pinned in Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || pkgs+=(mesa-vulkan-drivers)
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || pkgs+=(chromium-driver)
dpkg -s fonts-nanum >/dev/null 2>&1 || pkgs+=(fonts-nanum)   # Hangul labels of --draw; train/'s scenes
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || pkgs+=(fonts-dejavu-core)   # train/'s Latin scenes
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)              # the npm package's build and tests
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if [ ${#pkgs[@]} -gt 0 ]; then
    echo "setup: apt-get install ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

wb=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' Cargo.toml)
[ -n "$wb" ] || { echo "setup: no pinned wasm-bindgen version in Cargo.toml" >&2; exit 1; }
if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $wb\$"; then
    echo "setup: cargo install wasm-bindgen-cli $wb (a few minutes)"
    cargo install -q wasm-bindgen-cli --version "$wb"
fi
# train/'s tests (scenes and scoring; training itself needs torch and runs on the lent GPU)
python3 -c 'import PIL, numpy' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pillow==13.0.0 numpy==2.4.6
# the npm package's dev dependencies (typescript, playwright-core), pinned by web/package-lock.json
(cd web && npm ci --no-audit --no-fund --loglevel=error)
# the demo's (vite), pinned by web/demo/package-lock.json
(cd web/demo && npm ci --no-audit --no-fund --loglevel=error)
echo "setup: done"
