#!/usr/bin/env bash
# The H200 measurements, run on the lent GPU machine from the repository root with .gl/ (Vulkan loader
# debs) and .device/ (scripts/bench-wasm/pack-for-device.sh) carried; the reports come back as $OUT/<mode>.tgz.
#   bash scripts/bench-h200.sh native   the model (default variants in full, then decode in the other three
#                                       variants issue 13 names: f16/f32 × subgroups/fallback), then every
#                                       fused-kernel shape (FULL_KERNELS=1: also every kernel at the model's
#                                       configuration)
#   bash scripts/bench-h200.sh wasm     the wasm build on Dawn against native (issue 15): same variants (f32)
#                                       in full; default against default and f16 with Dawn's f16 toggle,
#                                       decode only; then native decode without subgroups (f16 and f32)
set -x
: "${OUT:?OUT must name the folder the reports go to}"
MODE=${1:-native}
# a run brings back only a few files: the reports are written to $R and packed into $OUT/<mode>.tgz at the end
R=$(mktemp -d)
trap 'tar -czf "$OUT/${MODE}.tgz" -C "$R" .' EXIT
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
xz -dc .device/varco.xz > /tmp/varco && chmod +x /tmp/varco
V=/tmp/varco
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv > "$R/gpu.txt"
case "$MODE" in
native)
    # the model first, the kernel tables last: a run that meets the call's 600 s limit loses the least
    $V info > "$R/info.txt" 2>&1
    date
    timeout 170 $V bench model --shape 14b --runs 3 --out "$R/model-default.md" --figures "$R/model-default.json" > "$R/model-default.log" 2>&1
    date
    for v in "--act f32" "--no-subgroups" "--act f32 --no-subgroups"; do
        n=$(echo "$v" | tr -d ' -')
        timeout 60 $V bench model --shape 14b --runs 3 --decode-only $v --out "$R/decode-$n.md" > "$R/decode-$n.log" 2>&1
        date
    done
    timeout 90 $V bench kernels --filter fused --fused all --out "$R/fused-all.md" > "$R/fused-all.log" 2>&1
    date
    # issue 14's tiers: the q4 matmul at f32 and f16 activations, then packed f16; prefill and vision packed
    for v in "--act f32" "" "--packed-f16"; do
        n=$(echo "matmul$v" | tr -d ' -')
        timeout 60 $V bench kernels --filter matmul $v --out "$R/$n.md" > "$R/$n.log" 2>&1
    done
    timeout 120 $V bench model --shape 14b --runs 3 --packed-f16 --contexts 1024 --steps 8 --out "$R/model-packed.md" > "$R/model-packed.log" 2>&1
    date
    [ -n "${FULL_KERNELS:-}" ] && timeout 120 $V bench kernels --out "$R/kernels.md" > "$R/kernels.log" 2>&1
    date
    ;;
wasm)
    # same variants (f32 activations, subgroups) in full; default against default and Dawn's f16 toggle for
    # decode only, then the native variants without subgroups (what fits in one call's device time)
    date
    timeout 170 bash scripts/bench-wasm/on-device.sh --shape 14b --runs 3 --tiles 7 --act f32 --out "$R/wasm-f32.md" > "$R/wasm-f32.log" 2>&1
    date
    timeout 70 bash scripts/bench-wasm/on-device.sh --shape 14b --runs 3 --decode-only --out "$R/wasm-default.md" > "$R/wasm-default.log" 2>&1
    date
    timeout 70 bash scripts/bench-wasm/on-device.sh --shape 14b --runs 3 --f16-on-nvidia --act f16 --decode-only --out "$R/wasm-f16.md" > "$R/wasm-f16.log" 2>&1
    date
    for v in "--no-subgroups" "--act f32 --no-subgroups"; do
        n=$(echo "$v" | tr -d ' -')
        timeout 35 /opt/varco-node/varco bench model --shape 14b --runs 3 --decode-only $v --out "$R/decode-$n.md" > "$R/decode-$n.log" 2>&1
        date
    done
    ;;
*) echo "bench-h200: native or wasm" >&2; exit 2 ;;
esac
tail -n 30 "$R"/*.md
