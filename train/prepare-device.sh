#!/usr/bin/env bash
# Prepares what train/run-h200.sh needs carried to the lent H200 (all ignored by git): .fonts (the Debian
# fonts the scenes are drawn with; the H200 machine has none), .gl (the Vulkan loader, for our engine) and
# .device-train/varco.xz (a release build of varco). Then: run with carry [".fonts", ".gl", ".device-train"].
set -euo pipefail
cd "$(dirname "$0")/.."
for p in /.fonts/ /.gl/ /.device-train/; do grep -qx "$p" .git/info/exclude || echo "$p" >> .git/info/exclude; done
mkdir -p .fonts
python3 - <<'PY'
import os, shutil, sys
sys.path.insert(0, "train")
import fonts
for name, _ in fonts.FONTS:
    src = os.path.join("/usr/share/fonts/truetype", name)
    if not os.path.exists(src):
        sys.exit(f"{src} is missing: apt-get install fonts-nanum fonts-dejavu-core")
    shutil.copyfile(src, os.path.join(".fonts", os.path.basename(name)))
PY
if [ ! -f .gl/libvulkan1.deb ] && ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
cargo build --release --bin varco
mkdir -p .device-train
xz -T2 -6 -c target/release/varco > .device-train/varco.xz
du -sh .fonts .gl .device-train
