#!/usr/bin/env bash
# On the lent GPU machine (issue 15): Chromium itself on the GPU, measured against the same wasm build on
# Dawn under Node, back to back. What it needs travels in parts over consecutive runs while the machine is
# held (each run's tree is limited to 64 MiB): the folders .dc1, .dc2, ... (the browser), .dcw (Dawn for
# Node, web/pkg-bench, playwright-core) and .dcn (Node) from pack-chromium.sh. Each run copies what it
# carries to /opt/varco-chromium; files there survive until the machine goes back (30 s idle: chain the runs).
#   bash scripts/bench-wasm/chromium-on-device.sh stage     keep what this run carries, say what is still missing
#   bash scripts/bench-wasm/chromium-on-device.sh run       unpack, then Chromium (decode at 1k and 8k, default
#                                                           variants, then with Dawn's f16 toggle), then the
#                                                           wasm build on Dawn under Node against native
# Reports come back in $OUT/chromium.tgz (chromium*.md, node-dawn-*.md, the logs, the probes' chrome://gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
S=/opt/varco-chromium
mkdir -p "$S"
for d in .dc*; do
    [ -d "$d" ] && cp "$d"/* "$S/" && echo "stage: kept $d ($(du -sh "$d" | cut -f1))"
done
need=$(ls "$S"/part[0-9]* 2>/dev/null | wc -l)
have_all() {
    local missing=()
    [ -f "$S/sha256" ] || missing+=(sha256)
    for f in node.tar.xz webgpu.tar.xz pkg-bench.tar.xz playwright-core.tar.xz parts; do
        [ -f "$S/$f" ] || missing+=("$f")
    done
    if [ -f "$S/parts" ]; then
        for i in $(seq 0 $(($(cat "$S/parts") - 1))); do [ -f "$S/part$i" ] || missing+=("part$i"); done
    fi
    [ ${#missing[@]} -eq 0 ] || { echo "stage: still missing: ${missing[*]}"; return 1; }
}
case "${1:-}" in
stage) have_all; ls -la "$S"; exit 0 ;;
run) have_all || exit 2 ;;
*) echo "chromium-on-device: stage or run" >&2; exit 2 ;;
esac
: "${OUT:?OUT must name the folder the reports go to}"
# a run brings back only a few files: the reports go to $R, packed into $OUT/chromium.tgz at the end
R=$(mktemp -d)
trap 'cp "$OUT"/*.txt "$R"/ 2>/dev/null; tar -czf "$OUT/chromium.tgz" -C "$R" .' EXIT
echo "parts: $need"
if [ ! -x /opt/chromium/chromium ]; then
    cat "$S"/part[0-9]* > /tmp/chromium.tar.xz
    [ "$(sha256sum /tmp/chromium.tar.xz | cut -d' ' -f1)" = "$(cat "$S/sha256")" ] || { echo "chromium: the parts do not add up to the packed archive (sha256)" >&2; exit 1; }
    tar -xJf /tmp/chromium.tar.xz -C /opt && rm /tmp/chromium.tar.xz
fi
mkdir -p /opt/varco-node scripts/bench-wasm/node_modules web/node_modules
tar -xJf "$S/node.tar.xz" -C /opt/varco-node
rm -rf scripts/bench-wasm/node_modules/webgpu web/node_modules/playwright-core web/pkg-bench
tar -xJf "$S/webgpu.tar.xz" -C scripts/bench-wasm/node_modules && mv scripts/bench-wasm/node_modules/package scripts/bench-wasm/node_modules/webgpu
tar -xJf "$S/playwright-core.tar.xz" -C web/node_modules
tar -xJf "$S/pkg-bench.tar.xz" -C web
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json VK_ICD_FILENAMES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
N=/opt/varco-node/bin/node
# Chromium's own libraries (Debian 12's) come first for the browser only; glibc and libstdc++ are the machine's
cat > /opt/chromium/run <<EOF
#!/bin/sh
LD_LIBRARY_PATH=/opt/chromium/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec /opt/chromium/chromium "\$@"
EOF
chmod +x /opt/chromium/run
LD_LIBRARY_PATH=/opt/chromium/lib ldd /opt/chromium/chromium | grep "not found" | tee "$OUT/ldd-missing.txt"
/opt/chromium/run --version
# Two ways to put Chromium's GPU process on Vulkan: Google's recipe for headless WebGPU, then the same with
# Vulkan forced native and no fallback to GL; the first whose page gets the NVIDIA adapter is measured.
# (developer features: timestamps unquantized, for the per-kernel profile)
GPU=()
for cfg in "--enable-features=Vulkan --use-angle=vulkan --disable-vulkan-surface" \
           "--enable-features=Vulkan --use-vulkan=native --use-angle=vulkan --disable-vulkan-surface --disable-vulkan-fallback-to-gl-for-testing"; do
    try=(); for f in $cfg --ignore-gpu-blocklist --enable-webgpu-developer-features; do try+=("--flag=$f"); done
    n=$((${n:-0} + 1))
    DEBUG=pw:browser timeout 60 $N scripts/bench-wasm/chromium.mjs --chromium /opt/chromium/run "${try[@]}" --gpu-info "$OUT/chrome-gpu-$n.txt" \
        --shape small --contexts 64 --steps 4 --runs 1 > "$R/probe-$n.log" 2>&1
    grep -a -m1 "adapter in the page" "$R/probe-$n.log"
    if grep -a -q -i '"vendor":"nvidia"' "$R/probe-$n.log"; then GPU=("${try[@]}"); break; fi
done
[ ${#GPU[@]} -gt 0 ] || { echo "chromium: no configuration gave the page the NVIDIA adapter (chrome-gpu-*.txt, probe-*.log)"; grep -a -i -E "vulkan|webgpu|dawn|adapter|gpu" "$R"/probe-*.log | head -40; }
[ ${#GPU[@]} -gt 0 ] || GPU=("${try[@]}")
echo "chromium flags: ${GPU[*]}"
# Chromium (the default variants: f32 activations, as Chrome on NVIDIA/Linux gives; then with Dawn's f16
# toggle), then the same wasm build on Dawn under Node, back to back with the native build (varco from
# .device-coop, if carried): the same variants (f32) in full, then default against default (decode)
timeout 130 $N scripts/bench-wasm/chromium.mjs --chromium /opt/chromium/run "${GPU[@]}" --gpu-info "$OUT/gpu-info.txt" \
    --contexts 1024,8192 --runs 3 --out "$R/chromium.md" > "$R/chromium.log" 2>&1
grep -a -E "^(adapter|decode shapes|\| [0-9]+ context)|page got|failed" "$R/chromium.log"
timeout 100 $N scripts/bench-wasm/chromium.mjs --chromium /opt/chromium/run "${GPU[@]}" \
    --flag=--enable-dawn-features=vulkan_enable_f16_on_nvidia --contexts 1024,8192 --runs 3 --out "$R/chromium-f16.md" > "$R/chromium-f16.log" 2>&1
grep -a -E "^(adapter|\| [0-9]+ context)|failed" "$R/chromium-f16.log"
NATIVE=()
if [ -f .device-coop/varco.xz ]; then
    xz -dc .device-coop/varco.xz > /tmp/varco && chmod +x /tmp/varco && NATIVE=(--native /tmp/varco)
fi
timeout 200 $N scripts/bench-wasm/run.mjs "${NATIVE[@]}" --shape 14b --runs 3 --tiles 7 --act f32 --out "$R/node-dawn-f32.md" > "$R/node-dawn-f32.log" 2>&1
grep -a -E "^\| " "$R/node-dawn-f32.md" | tail -12
timeout 100 $N scripts/bench-wasm/run.mjs "${NATIVE[@]}" --shape 14b --runs 3 --decode-only --out "$R/node-dawn-default.md" > "$R/node-dawn-default.log" 2>&1
grep -a -E "^\| " "$R/node-dawn-default.md" | tail -5
exit 0
