#!/usr/bin/env bash
# Packs this machine's Debian Chromium (the browser of the browser tests) for the lent GPU machine, which has
# no browser and no network (issue 15: the benchmark in Chromium itself on the H200). The browser is larger
# than one run may carry (the tree that travels is limited to 64 MiB), so the bundle — /usr/lib/chromium
# without chromedriver, SwiftShader and the Vulkan validation layer, plus every shared library it links
# against except glibc's and the C++ runtime's (the machine's own are newer), plus NSS's dlopen'd modules —
# is xz-compressed and split into parts of at most $PART MiB, one folder each: .dc1, .dc2, ... (ignored).
# What the harness needs beside the browser comes from .device (pack-for-device.sh, run first): Node into
# .dcn, Dawn for Node, web/pkg-bench and playwright-core into .dcw. Consecutive runs each carry one or two
# of these folders and copy them to /opt/varco-chromium (files outside $OUT stay while the machine is held);
# the last one runs `bash scripts/bench-wasm/chromium-on-device.sh run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PART=${PART:-40}
[ -f .device/node.tar.xz ] || { echo "pack-chromium: .device is missing (bash scripts/bench-wasm/pack-for-device.sh)" >&2; exit 2; }
[ -x /usr/lib/chromium/chromium ] || { echo "pack-chromium: /usr/lib/chromium/chromium is missing (bash scripts/setup.sh installs it)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
b=$tmp/chromium
mkdir -p "$b/lib"
cp -a /usr/lib/chromium/. "$b/"
rm -f "$b"/chromedriver "$b"/libVkLayer_khronos_validation.so* "$b"/libVkICD_mock_icd.so* "$b"/libvk_swiftshader.so "$b"/vk_swiftshader_icd.json
# the link closure, as the dynamic loader resolves it here; glibc and libstdc++/libgcc_s stay the machine's
ldd /usr/lib/chromium/chromium | awk '$3 ~ /^\// {print $3}' \
    | grep -v -E '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s)\.so' \
    | while read -r l; do cp -L "$l" "$b/lib/"; done
for l in libsoftokn3.so libfreebl3.so libfreeblpriv3.so libnssckbi.so libnssdbm3.so; do
    cp -L "/usr/lib/x86_64-linux-gnu/$l" "$b/lib/"
done
/usr/lib/chromium/chromium --version > "$b/VERSION"
rm -rf .dc[0-9]* .dcw .dcn
tar -C "$tmp" -cf - chromium | xz -9 -T2 > "$tmp/chromium.tar.xz"
sha256sum "$tmp/chromium.tar.xz" | awk '{print $1}' > "$tmp/sha256"
split -b "${PART}M" -d -a 1 "$tmp/chromium.tar.xz" "$tmp/part"
n=$(ls "$tmp"/part* | wc -l)
i=1
for p in "$tmp"/part*; do
    mkdir ".dc$i" && mv "$p" ".dc$i/" && cp "$tmp/sha256" ".dc$i/" && echo "$n" > ".dc$i/parts"
    i=$((i + 1))
done
# the harness's browser driver travels too (the machine has no npm)
[ -d web/node_modules/playwright-core ] || (cd web && npm ci --silent)
mkdir .dcw .dcn && tar -cJf .dcw/playwright-core.tar.xz -C web/node_modules playwright-core
cp .device/webgpu.tar.xz .device/pkg-bench.tar.xz .dcw/
cp .device/node.tar.xz .dcn/
grep -q '^/.dc\*/$' .git/info/exclude 2>/dev/null || echo '/.dc*/' >> .git/info/exclude
du -sh .dc[0-9]* .dcw .dcn
