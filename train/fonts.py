"""The fonts the scenes are drawn with (Debian's fonts-nanum and fonts-dejavu-core). No imports beyond the
standard library: train/prepare-device.sh reads the list with the system Python."""
import os

FONT_DIR = os.environ.get("VARCO_FONTS", "/usr/share/fonts/truetype")
# (file, has Hangul). Fonts with Hangul also draw Latin; DejaVu draws Latin only.
FONTS = [("nanum/NanumGothic.ttf", True), ("nanum/NanumGothicBold.ttf", True), ("nanum/NanumMyeongjo.ttf", True),
         ("nanum/NanumSquareR.ttf", True), ("nanum/NanumSquareRoundB.ttf", True),
         ("nanum/NanumBarunGothic.ttf", True), ("dejavu/DejaVuSans.ttf", False),
         ("dejavu/DejaVuSans-Bold.ttf", False), ("dejavu/DejaVuSerif.ttf", False),
         ("dejavu/DejaVuSansCondensed.ttf", False)]


def font_path(name):
    """A font file: under $VARCO_FONTS as Debian lays them out, or flat in that folder (the device copy)."""
    p = os.path.join(FONT_DIR, name)
    return p if os.path.exists(p) else os.path.join(FONT_DIR, os.path.basename(name))
