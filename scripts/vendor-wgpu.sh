#!/usr/bin/env bash
# vendor/wgpu: wgpu from crates.io with vendor/wgpu-subgroups.patch (vendor/README.md says why).
#   bash scripts/vendor-wgpu.sh VERSION   re-make vendor/wgpu from that version
#   bash scripts/vendor-wgpu.sh --check   does the newest wgpu on crates.io map `subgroups` by itself?
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() { # wgpu $1's published source, through cargo (a throwaway package that depends on it) → stdout: its path
    mkdir -p "$tmp/probe/src" && touch "$tmp/probe/src/lib.rs"
    printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nwgpu = { version = "=%s", default-features = false }\n' "$1" > "$tmp/probe/Cargo.toml"
    (cd "$tmp/probe" && cargo fetch --quiet)
    cargo metadata --quiet --format-version 1 --manifest-path "$tmp/probe/Cargo.toml" \
        | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "wgpu").rsplit("/", 1)[0])'
}
if [ "${1:-}" = "--check" ]; then
    latest=$(cd "$tmp" && cargo info wgpu --registry crates-io 2>/dev/null | sed -n 's/^version: \([0-9.]*\).*/\1/p' | head -1)
    src=$(fetch "$latest")
    if grep -q 'GpuFeatureName::Subgroups' "$src/src/backend/webgpu.rs"; then
        echo "wgpu $latest maps subgroups on the web: move to it and delete vendor/ and [patch.crates-io]"
    else
        echo "wgpu $latest still lacks the subgroups mapping: keep vendor/wgpu"
    fi
    exit 0
fi
version="${1:?usage: vendor-wgpu.sh VERSION | --check}"
src=$(fetch "$version")
cp -r "$src" "$tmp/wgpu"
(cd "$tmp/wgpu" && patch -p1 --forward --quiet < "$root/vendor/wgpu-subgroups.patch" && rm -f Cargo.lock .cargo_vcs_info.json .cargo-ok)
rm -rf vendor/wgpu
mv "$tmp/wgpu" vendor/wgpu
echo "vendor/wgpu is wgpu $version with the subgroups mapping; set wgpu = \"=$version\" in Cargo.toml"
