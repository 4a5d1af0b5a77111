#!/usr/bin/env bash
# Checks and timings on the lent NVIDIA GPU that CI's lavapipe cannot give (it has no cooperative matrices, and
# its timings mean nothing), each a few minutes, several in one device call.
#   bash scripts/on-device.sh pack          here: .device-coop/ (the release varco, the kernels, generate and trained test
#                                           binaries, stripped, xz) and .fixt/ (a copy of ../shared/fixtures'
#                                           model, which lies outside the tree that travels); both ignored.
#                                           BASE=REV also builds varco at REV (varco-base.xz) for the ab step
#   bash scripts/on-device.sh run STEP...   there (carry [".gl", ".device-coop", ".fixt"]; .gl from
#                                           train/prepare-device.sh); reports in $OUT/on-device.tgz. Steps:
#     check     the cooperative-matrix tier (issue 14) against the f64 reference (`kernels -- --ignored coop`:
#               matmul and prefill attention) and the fixture model's f16 path on it against transformers
#               (generate.rs, VARCO_COOP=1), and the decode kernels' suites (≈ 40 s)
#     coop      the tier's matmul and attention kernels, and the 14B's prefill, vision and first token
#               without the tier, with its matmul only, and with attention on it too (the default) (≈ 3 min;
#               COOP_VARIANTS="no-coop-attention default" leaves out the first; shape-KT:RI[:BUFS] runs the tier's
#               matmul in another of its built shapes, e.g. shape-32:4; COOP_TABLES=0 skips the kernel tables)
#     decode    the decode step's fused kernels in the model's shapes with q4's TOP products, exact
#               products, 8-bit integer products (DOT4) and loads only (issue 13), and decode attention; then
#               the model's decode for each of DECODE_RUNS (default "default dot4": the model's shapes, or one
#               kind of products — top, exact, dot4, loads — in every matrix; +nrc: shaders without wgpu's
#               runtime checks) (≈ 1 minute a run), then each of DECODE_SPECS (whole --decode-shapes specs);
#               FUSED replaces the kernel table's shapes
#     chunks    the 14B's prefill, first token and decode with each prefill chunk of CHUNKS (default "1024 2048
#               4096"; FLAGS: more `bench model` flags, e.g. --no-runtime-checks) (≈ 40 s each)
#     ab        the decode step of this varco against varco-base (pack with BASE=REV), alternating base, new,
#               base, new on one machine (AB_FLAGS: more `bench model` flags), then both binaries' decode
#               attention kernel rows and the cost of a dependent dispatch (≈ 4 minutes)
#     model     the defaults end to end: the fixture model's 4-bit report, the 14B's figures, and its decode
#               without the integer products (≈ 4 minutes)
#     tiled     issue 14's portable tiers: the FMA probe's four forms, the tiled matmul's variants and
#               ablations in f32 and packed f16 (TILED_F32, TILED_F16), prefill attention in 64 × 32 and
#               32 × 64 steps, and greedy over lm_head's maxima (≈ 5 minutes)
#     tiled-model  the f32 tier's prefill, vision and first token with each --tiled-matmul of TILED_MODEL,
#               and with attention_q32 (≈ 1.5 minutes each)
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
    set -e
    for p in /.device-coop/ /.fixt/; do grep -qx "$p" .git/info/exclude || echo "$p" >> .git/info/exclude; done
    rm -rf .device-coop && mkdir .device-coop
    if [ -n "${BASE:-}" ]; then
        # built first: the two share target/, so this tree's varco is built over it afterwards
        tree=$(mktemp -d)/base
        git worktree add -f --detach "$tree" "$BASE"
        (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --bin varco)
        xz -T2 -6 -c target/release/varco > .device-coop/varco-base.xz
        git worktree remove --force "$tree"
    fi
    cargo build --release --bin varco
    for t in kernels generate trained; do
        bin=$(cargo test --workspace --test "$t" --no-run 2>&1 | sed -n "s/.*Executable tests\/$t.rs (\(.*\))/\1/p")
        strip -o "/tmp/$t-stripped" "$bin"
        xz -T2 -6 -c "/tmp/$t-stripped" > ".device-coop/$t.xz"
    done
    xz -T2 -6 -c target/release/varco > .device-coop/varco.xz
    rm -rf .fixt && mkdir .fixt && cp -r ../shared/fixtures/tiny-varco-a .fixt/
    du -sh .device-coop .fixt
    ;;
run)
    shift
    : "${OUT:?OUT must name the folder the reports go to}"
    # a call brings back only a few files: the reports go to $R, packed into $OUT/on-device.tgz at the end
    R=$(mktemp -d)
    trap 'tar -czf "$OUT/on-device.tgz" -C "$R" .' EXIT
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
    export VARCO_FIXTURES="$PWD/.fixt" VARCO_COOP=1
    for b in kernels generate varco varco-base; do
        [ -f ".device-coop/$b.xz" ] && xz -dc ".device-coop/$b.xz" > "/tmp/$b" && chmod +x "/tmp/$b"
    done
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$R/gpu.txt"
    for step in "$@"; do
        case "$step" in
        check)
            timeout 90 /tmp/kernels --ignored coop > "$R/coop-test.txt" 2>&1
            tail -5 "$R/coop-test.txt"
            timeout 60 /tmp/generate f16_path --nocapture > "$R/generate-f16.txt" 2>&1
            tail -4 "$R/generate-f16.txt"
            # the decode kernels CI checks on lavapipe, on this GPU too (its integer dot products, subgroups of 32)
            timeout 120 /tmp/kernels matvec_fused_q4 attention_decode fused_top > "$R/decode-kernels-test.txt" 2>&1
            tail -3 "$R/decode-kernels-test.txt"
            ;;
        coop)
            if [ "${COOP_TABLES:-1}" = 1 ]; then
                timeout 120 /tmp/varco bench kernels --filter matmul --out "$R/kernels-matmul.md" > "$R/kernels-matmul.log" 2>&1
                timeout 90 /tmp/varco bench kernels --filter attention --out "$R/kernels-attention.md" > "$R/kernels-attention.log" 2>&1
                grep -E "^\| (matmul|attention)" "$R"/kernels-*.md
            fi
            for v in ${COOP_VARIANTS:-no-coop no-coop-attention default}; do
                case "$v" in
                default) flag= ;;
                shape-*) flag="--coop-shape ${v#shape-}" ;;
                *) flag=--$v ;;
                esac
                timeout 100 /tmp/varco bench model --shape 14b --runs 3 --contexts 1024 --steps 8 --tiles 7,37 $flag --out "$R/model-$v.md" > "$R/model-$v.log" 2>&1
                grep -E "^(adapter|prefill|vision|time to first)" "$R/model-$v.md"
            done
            ;;
        decode)
            F=${FUSED:-32:4:2:top,32:4:2:dot4,32:4:2:loads,32:8:1:top,32:8:1:dot4,32:8:1:loads}
            timeout 150 /tmp/varco bench kernels --filter fused --fused $F --out "$R/fused.md" > "$R/fused.log" 2>&1
            grep -E "^\| fused" "$R/fused.md" | grep -v again
            timeout 60 /tmp/varco bench kernels --filter "attention decode" --out "$R/attention-decode.md" > "$R/attention-decode.log" 2>&1
            grep -E "^\| attention" "$R/attention-decode.md"
            # DECODE_RUNS: default, or the products of every matrix (top, exact, dot4, loads), each with
            # +nrc for shaders built without wgpu's runtime checks
            for v in ${DECODE_RUNS-default dot4}; do
                m=${v%+nrc}
                flags=
                [ "$m" != "$v" ] && flags=--no-runtime-checks
                [ "$m" != default ] && flags="$flags --decode-shapes qkv=32:4:2:$m,o=32:4:2:$m,gate_up=32:8:1:$m,down=32:4:2:$m"
                n=decode-$v
                timeout 90 /tmp/varco bench model --shape 14b --runs 3 --decode-only $flags --out "$R/$n.md" > "$R/$n.log" 2>&1
                echo "== $v"
                grep -E "^(decode shapes|\| [0-9]+ context|\| matvec_fused|\| attention_decode)" "$R/$n.md"
            done
            # DECODE_SPECS: whole --decode-shapes specs, space-separated (e.g. down=64:4:2:dot4)
            i=0
            for spec in ${DECODE_SPECS-}; do
                i=$((i + 1))
                timeout 90 /tmp/varco bench model --shape 14b --runs 3 --decode-only --decode-shapes "$spec" --out "$R/decode-spec$i.md" > "$R/decode-spec$i.log" 2>&1
                echo "== $spec"
                grep -E "^(decode shapes|\| [0-9]+ context|\| matvec_fused|\| attention_decode)" "$R/decode-spec$i.md" || grep -i error "$R/decode-spec$i.log"
            done
            ;;
        chunks)
            # the 14B's prefill and first token with each prefill chunk of CHUNKS (default "1024 2048 4096"):
            # a 1,024-row chunk leaves the last wave of the tensor-core matmul's 128 × 128 tiles part empty
            for c in ${CHUNKS:-1024 2048 4096}; do
                timeout 100 /tmp/varco bench model --shape 14b --runs 3 --contexts 1024 --steps 8 --tiles 7 --prefill-chunk "$c" ${FLAGS:-} --out "$R/model-chunk$c.md" > "$R/model-chunk$c.log" 2>&1
                echo "== chunk $c ${FLAGS:-}"
                grep -E "^(prefill|vision|time to first|follow-up|\| [0-9]+ context)" "$R/model-chunk$c.md" || tail -3 "$R/model-chunk$c.log"
            done
            ;;
        ab)
            [ -x /tmp/varco-base ] || { echo "on-device: ab needs varco-base (pack with BASE=REV)" >&2; exit 2; }
            i=0
            for b in base new base new; do
                i=$((i + 1))
                bin=/tmp/varco
                [ "$b" = base ] && bin=/tmp/varco-base
                timeout 100 "$bin" bench model --shape 14b --runs 3 --decode-only ${AB_FLAGS:-} --out "$R/ab$i-$b.md" > "$R/ab$i-$b.log" 2>&1
                echo "== $b"
                grep -E "^(\| [0-9]+ context|\| matvec_fused|\| attention_decode)" "$R/ab$i-$b.md" || tail -3 "$R/ab$i-$b.log"
            done
            # the base's filter may predate "attention decode" (it ran only sections whose name held the filter)
            timeout 90 /tmp/varco-base bench kernels --filter attention --out "$R/ab-kernels-base.md" > "$R/ab-kernels-base.log" 2>&1
            timeout 60 /tmp/varco bench kernels --filter "attention decode" --out "$R/ab-kernels-new.md" > "$R/ab-kernels-new.log" 2>&1
            timeout 30 /tmp/varco bench kernels --filter dispatch --out "$R/ab-dispatch.md" > "$R/ab-dispatch.log" 2>&1
            grep -H -E "^\| (attention decode|dependent)" "$R"/ab-kernels-*.md "$R/ab-dispatch.md"
            ;;
        model)
            # the defaults end to end: the fixture model's 4-bit report (decode's integer products in a whole
            # model), then the 14B's figures, and decode without the integer products beside them
            timeout 120 /tmp/generate four_bit --nocapture > "$R/generate-q4.txt" 2>&1
            grep -E "Q4 overall|test result" "$R/generate-q4.txt"
            timeout 150 /tmp/varco bench model --shape 14b --runs 3 --tiles 7,37 --out "$R/model.md" > "$R/model.log" 2>&1
            grep -E "^(adapter|decode shapes|prefill|vision|time to first|follow-up|\| [0-9]+ context)" "$R/model.md"
            timeout 90 /tmp/varco bench model --shape 14b --runs 3 --decode-only --no-int-dot --out "$R/model-no-int-dot.md" > "$R/model-no-int-dot.log" 2>&1
            grep -E "^(decode shapes|\| [0-9]+ context)" "$R/model-no-int-dot.md"
            ;;
        tiled)
            # issue 14's portable tiers, kernels only: the FMA probe in its four forms (does any form pair f16
            # products?), the tiled matmul's variants and ablations (TILED_F32, TILED_F16: lists of
            # --tiled-matmul values), prefill attention's two register-tiled kernels (64 queries × 32 keys a
            # step, and 32 × 64: attention_q32), and the greedy pass over lm_head's maxima (issue 13)
            timeout 90 /tmp/varco bench kernels --filter peak --out "$R/peak.md" > "$R/peak.log" 2>&1
            grep -E "^\| FMA probe" "$R/peak.md"
            for v in ${TILED_F32:-il,pf,ur il,pf,ur,bw il,pf,ur,ma il,pf,ur,w8 il,pf,ur,bw,w8 il,pf,ur,t16 il,pf,ur,t16,ma il,pf,ur,xl il,pf,ur,xs il,pf,ur,xs,xb il,pf,ur,xs,w8 il,pf,ur,t16,xs il,pf,ur,t16,xs,xb}; do
                timeout 60 /tmp/varco bench kernels --no-coop --filter "matmul q4" --act f32 --tiled-matmul "$v" --out "$R/tiled-f32-$v.md" > "$R/tiled-f32-$v.log" 2>&1
                echo "== f32 $v: $(grep -E '^\| matmul q4 tile128' "$R/tiled-f32-$v.md" | awk -F'|' '{printf "%s ", $6}')"
            done
            for v in ${TILED_F16:-il,pf,ur il,pf,ur,ma il,pf,ur,bw il,pf,ur,bw,ma il,pf,ur,t16 il,pf,ur,t16,ma il,pf,ur,xs}; do
                timeout 60 /tmp/varco bench kernels --no-coop --filter "matmul q4" --act f16 --packed-f16 --tiled-matmul "$v" --out "$R/tiled-f16-$v.md" > "$R/tiled-f16-$v.log" 2>&1
                echo "== packed f16 $v: $(grep -E '^\| matmul q4 tile128' "$R/tiled-f16-$v.md" | awk -F'|' '{printf "%s ", $6}')"
            done
            for a in f32 f16; do
                timeout 120 /tmp/varco bench kernels --no-coop --filter "attention prefill" --act $a --out "$R/attention-$a.md" > "$R/attention-$a.log" 2>&1
                grep -E "^\| attention prefill" "$R/attention-$a.md" | sed "s/^/$a /"
            done
            timeout 90 /tmp/varco bench kernels --filter small --out "$R/greedy.md" > "$R/greedy.log" 2>&1
            grep -E "^\| sample greedy" "$R/greedy.md"
            ;;
        tiled-model)
            # the f32 tier's prefill, vision and first token with each --tiled-matmul of TILED_MODEL, then with
            # prefill attention in 32 × 64 steps (FLAGS: more `bench model` flags, e.g. --tiled-matmul for it)
            for v in ${TILED_MODEL:-il,pf,ur il,pf,ur,bw il,pf,ur,t16}; do
                timeout 100 /tmp/varco bench model --shape 14b --runs 3 --no-coop --act f32 --tiled-matmul "$v" --tiles 7 --out "$R/tiled-model-$v.md" > "$R/tiled-model-$v.log" 2>&1
                echo "== f32 tier, $v"
                grep -E "^(prefill|vision|time to first)" "$R/tiled-model-$v.md" || tail -3 "$R/tiled-model-$v.log"
            done
            timeout 100 /tmp/varco bench model --shape 14b --runs 3 --no-coop --act f32 --attention-q32 ${FLAGS:-} --tiles 7 --out "$R/tiled-model-q32.md" > "$R/tiled-model-q32.log" 2>&1
            echo "== f32 tier, attention q32 ${FLAGS:-}"
            grep -E "^(prefill|vision|time to first)" "$R/tiled-model-q32.md" || tail -3 "$R/tiled-model-q32.log"
            ;;
        *) echo "on-device: no step $step (check, coop, decode, chunks, ab, model, tiled, tiled-model)" >&2; exit 2 ;;
        esac
    done
    ;;
*) echo "on-device: pack, or run STEP..." >&2; exit 2 ;;
esac
