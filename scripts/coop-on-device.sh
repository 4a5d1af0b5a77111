#!/usr/bin/env bash
# The cooperative-matrix tier (issue 14) checked and timed on the lent NVIDIA GPU, which CI's lavapipe cannot
# do (it has no cooperative matrices).
#   bash scripts/coop-on-device.sh pack   here: .device-coop/ (the release varco, the kernels and generate test
#                                         binaries, stripped, xz) and .fixt/ (a copy of ../shared/fixtures'
#                                         model, which lies outside the tree that travels); both ignored
#   bash scripts/coop-on-device.sh run    there (carry [".gl", ".device-coop", ".fixt"]; .gl from
#                                         train/prepare-device.sh): the tier against the f64 reference
#                                         (`kernels -- --ignored coop`: matmul and prefill attention), the
#                                         fixture model's f16 path on the tier against transformers
#                                         (generate.rs, VARCO_COOP=1), the matmul and attention kernels, and
#                                         the 14B's prefill, vision and first token without the tier, with
#                                         its matmul only, and with attention on it too (the default); reports
#                                         to $OUT (≈ 3 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
    set -e
    for p in /.device-coop/ /.fixt/; do grep -qx "$p" .git/info/exclude || echo "$p" >> .git/info/exclude; done
    cargo build --release --bin varco
    rm -rf .device-coop && mkdir .device-coop
    for t in kernels generate; do
        bin=$(cargo test --workspace --test "$t" --no-run 2>&1 | sed -n "s/.*Executable tests\/$t.rs (\(.*\))/\1/p")
        strip -o "/tmp/$t-stripped" "$bin"
        xz -T2 -6 -c "/tmp/$t-stripped" > ".device-coop/$t.xz"
    done
    xz -T2 -6 -c target/release/varco > .device-coop/varco.xz
    rm -rf .fixt && mkdir .fixt && cp -r ../shared/fixtures/tiny-varco-a .fixt/
    du -sh .device-coop .fixt
    ;;
run)
    : "${OUT:?OUT must name the folder the reports go to}"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
    export VARCO_FIXTURES="$PWD/.fixt" VARCO_COOP=1
    for b in kernels generate varco; do xz -dc ".device-coop/$b.xz" > "/tmp/$b" && chmod +x "/tmp/$b"; done
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
    timeout 90 /tmp/kernels --ignored coop > "$OUT/coop-test.txt" 2>&1
    tail -5 "$OUT/coop-test.txt"
    timeout 60 /tmp/generate f16_path --nocapture > "$OUT/generate-f16.txt" 2>&1
    tail -4 "$OUT/generate-f16.txt"
    timeout 120 /tmp/varco bench kernels --filter matmul --out "$OUT/kernels-matmul.md" > "$OUT/kernels-matmul.log" 2>&1
    timeout 90 /tmp/varco bench kernels --filter attention --out "$OUT/kernels-attention.md" > "$OUT/kernels-attention.log" 2>&1
    grep -E "^\| (matmul|attention)" "$OUT"/kernels-*.md
    for v in --no-coop --no-coop-attention ""; do
        n=model${v:-default}
        timeout 100 /tmp/varco bench model --shape 14b --runs 3 --contexts 1024 --steps 8 --tiles 7,37 $v --out "$OUT/$n.md" > "$OUT/$n.log" 2>&1
        grep -E "^(adapter|prefill|vision|time to first)" "$OUT/$n.md"
    done
    ;;
*) echo "coop-on-device: pack or run" >&2; exit 2 ;;
esac
