"""Synthetic scenes with their ground truth: coloured shapes and printed words (Latin and Hangul).

A scene is an RGB image, the items drawn on it (what each is, its tight axis-aligned box in pixels) and a label
map of the same size that names, for every pixel, the shape, colour and character drawn there. The label map
feeds the training's auxiliary loss on the vision tower's patches (which character or shape covers each patch)
and is never part of the exported model. Everything is drawn from `random.Random(seed)`: a scene is a pure
function of its seed and its `SceneSpec`.

Items never overlap (with a margin), so every box is unambiguous. Text is dark on light or light on dark,
whatever the background under it, as signs and documents are.
"""
import math
import os
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fonts import FONTS, font_path
from vocab import LATIN, char_classes, hangul_inventory, is_hangul, korean_words, vocabulary

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond", "heart"]
SHAPES_KO = {"circle": "원", "square": "사각형", "triangle": "삼각형", "star": "별", "cross": "십자가",
             "diamond": "마름모", "heart": "하트"}
# Well-separated colours; each item jitters its colour a little so that the name, not the exact value, is learnt.
COLORS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (245, 215, 30),
          "orange": (245, 130, 20), "purple": (130, 40, 170), "black": (15, 15, 15), "white": (245, 245, 245),
          "pink": (245, 120, 180), "brown": (120, 70, 30), "gray": (128, 128, 128)}
COLORS_KO = {"red": "빨간", "green": "초록", "blue": "파란", "yellow": "노란", "orange": "주황", "purple": "보라",
             "black": "검은", "white": "흰", "pink": "분홍", "brown": "갈색", "gray": "회색"}
COLOR_NAMES = list(COLORS)

_font_cache = {}


def font(name, size):
    key = (name, size)
    if key not in _font_cache:
        _font_cache[key] = ImageFont.truetype(font_path(name), size)
    return _font_cache[key]


@dataclass
class Item:
    kind: str                 # "shape" or "text"
    text: str = ""            # the printed words (text items)
    shape: str = ""           # SHAPES (shape items)
    color: str = ""           # COLORS (shape items)
    box: tuple = ()           # (x0, y0, x1, y1) in pixels: the tight box of the drawn pixels, x1/y1 exclusive
    korean: bool = False      # the text has Hangul
    # text items: each character's span along the text, as fractions of its advance (a few degrees of rotation
    # ignored); training points the answer's tokens at the characters they spell (train.py, AttendWhere)
    chars: tuple = ()

    def label(self, ko=False):
        """How answers name the item: "red circle" / "빨간 원"; text items by their words."""
        if self.kind == "text":
            return self.text
        return f"{COLORS_KO[self.color]} {SHAPES_KO[self.shape]}" if ko else f"{self.color} {self.shape}"

    def norm_box(self, w, h):
        x0, y0, x1, y1 = self.box
        return (x0 / w, y0 / h, x1 / w, y1 / h)

    def truth(self):
        """The item as the truth files record it (score.py reads them; so does the demo's browser test)."""
        return {"kind": self.kind, "text": self.text, "shape": self.shape, "color": self.color, "box": list(self.box),
                "korean": self.korean, "label_en": self.label(False), "label_ko": self.label(True)}


@dataclass
class SceneSpec:
    """What a scene may hold. Training varies it along a curriculum; evaluation fixes it."""
    min_items: int = 1
    max_items: int = 6
    text_share: float = 0.5        # chance that an item is text
    hangul_share: float = 0.5      # chance that a text item is Korean
    min_font: int = 16             # text height in pixels, before the image is tiled
    max_font: int = 40
    max_words: int = 2             # words in one text item (a short line)
    rotate_deg: float = 4.0
    sizes: tuple = ((224, 224), (448, 448), (448, 224), (224, 448), (448, 336), (336, 448), (672, 448),
                    (640, 480), (512, 384), (300, 200), (800, 600))
    noise: float = 1.0             # strength of the degradations (0: clean)
    min_text: int = 0              # at least this many text items ...
    min_shapes: int = 0            # ... and shape items


def curriculum(progress):
    """The training curriculum at `progress` (0..1 of its samples): few, large items first; many, small,
    rotated and degraded ones later."""
    p = min(max(progress, 0.0), 1.0)
    return SceneSpec(min_items=1, max_items=2 + round(6 * p), min_font=int(26 - 12 * p),
                     max_font=int(44 - 8 * p), max_words=1 + round(p), rotate_deg=4.0 * p,
                     noise=0.3 + 0.7 * p,
                     sizes=((224, 224), (448, 448), (448, 224), (224, 448), (448, 336), (336, 448),
                            (672, 448), (448, 672), (640, 480), (512, 384), (300, 200), (360, 270)))


@dataclass
class Scene:
    image: Image.Image
    items: list
    labels: np.ndarray = field(repr=False, default=None)   # [H, W, 3] int16: shape, colour, character classes


class Vocab:
    """The word sources and the class tables, built once per process."""

    def __init__(self, tokenizer_json, hangul_size=400):
        self.en, _ = vocabulary(tokenizer_json)
        self.ko = korean_words(tokenizer_json, hangul_size)
        self.syllables = hangul_inventory(tokenizer_json, hangul_size)
        self.chars = char_classes(tokenizer_json, hangul_size)
        self.char_index = {c: i for i, c in enumerate(self.chars)}

    def word(self, rng, korean):
        r = rng.random()
        if korean:
            if r < 0.55:
                return rng.choice(self.ko)
            if r < 0.85:
                return "".join(rng.choice(self.syllables) for _ in range(rng.randint(2, 4)))
            return str(rng.randint(1, 9999)) + rng.choice(self.syllables)
        if r < 0.6:
            w = rng.choice(self.en)
            return rng.choice([w, w.upper(), w.capitalize()])
        if r < 0.8:
            return "".join(rng.choice(LATIN[:52]) for _ in range(rng.randint(2, 6)))
        if r < 0.95:
            return str(rng.randint(0, 99999))
        return f"{rng.randint(1, 999)}-{rng.randint(1, 9999)}"

    def phrase(self, rng, korean, max_words):
        return " ".join(self.word(rng, korean) for _ in range(rng.randint(1, max_words)))


_NOISE = {}


def _noise(rng, h, w):
    """Gaussian noise [h, w, 3]: a crop at a random place of one fixed bank per process (drawing fresh noise
    for every image cost a third of a scene's time)."""
    if "bank" not in _NOISE:
        _NOISE["bank"] = np.random.default_rng(20261205).standard_normal((1024, 1024, 3), np.float32)
    bank = _NOISE["bank"]
    if h > bank.shape[0] or w > bank.shape[1]:
        return np.random.default_rng(rng.randrange(1 << 31)).standard_normal((h, w, 3), np.float32)
    y, x = rng.randint(0, bank.shape[0] - h), rng.randint(0, bank.shape[1] - w)
    return bank[y:y + h, x:x + w]


def _background(rng, w, h, noise):
    kind = rng.random()
    c0 = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    c1 = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    if kind < 0.3:
        img = np.broadcast_to(c0, (h, w, 3)).astype(np.float32)
    elif kind < 0.7:
        a = rng.uniform(0, 2 * math.pi)
        x = np.arange(w, dtype=np.float32) * np.float32(math.cos(a))
        y = np.arange(h, dtype=np.float32) * np.float32(math.sin(a))
        t = x[None, :] + y[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = c0 + (c1 - c0) * t[..., None]
    else:   # soft blotches: a low-resolution random field, upsampled
        lo = np.random.default_rng(rng.randrange(1 << 31)).uniform(0, 255, (rng.randint(2, 6), rng.randint(2, 6), 3))
        img = np.asarray(Image.fromarray(lo.astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
        img = np.float32(0.5) * img + np.float32(0.5) * c0
    if noise > 0 and rng.random() < 0.5:
        img = img + _noise(rng, h, w) * np.float32(rng.uniform(0, 10) * noise)
    return np.clip(img, 0, 255)


def _polygon(shape, x0, y0, x1, y1):
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        return [(cx + (rx if k % 2 == 0 else 0.42 * rx) * math.sin(k * math.pi / 5),
                 cy - (ry if k % 2 == 0 else 0.42 * ry) * math.cos(k * math.pi / 5)) for k in range(10)]
    if shape == "cross":
        a, b = 0.3, 0.7
        xs = [x0 + (x1 - x0) * f for f in (0, a, b, 1)]
        ys = [y0 + (y1 - y0) * f for f in (0, a, b, 1)]
        return [(xs[1], ys[0]), (xs[2], ys[0]), (xs[2], ys[1]), (xs[3], ys[1]), (xs[3], ys[2]), (xs[2], ys[2]),
                (xs[2], ys[3]), (xs[1], ys[3]), (xs[1], ys[2]), (xs[0], ys[2]), (xs[0], ys[1]), (xs[1], ys[1])]
    if shape == "heart":
        pts = []
        for k in range(40):
            t = 2 * math.pi * k / 40
            px = 16 * math.sin(t) ** 3
            py = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((cx + rx * px / 16.5, cy + ry * (py + 2.5) / 15.5))
        return pts
    raise ValueError(shape)


def _layer_shape(rng, shape, color, size):
    """An RGBA layer holding one shape, and its label layer (1 where drawn)."""
    w, h = size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    mask = Image.new("L", (w, h), 0)
    rgb = tuple(int(np.clip(c + rng.randint(-18, 18), 0, 255)) for c in COLORS[color])
    d, m = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    box = (1, 1, w - 2, h - 2)
    if shape == "circle":
        d.ellipse(box, fill=rgb + (255,))
        m.ellipse(box, fill=255)
    elif shape == "square":
        d.rectangle(box, fill=rgb + (255,))
        m.rectangle(box, fill=255)
    else:
        poly = _polygon(shape, *box)
        d.polygon(poly, fill=rgb + (255,))
        m.polygon(poly, fill=255)
    return layer, mask


def _layer_text(text, fnt, color, vocab):
    """An RGBA layer with the text, and a char-class layer (int32) filling each character's advance box."""
    l, t, r, b = fnt.getbbox(text)
    pad = 2
    w, h = r - l + 2 * pad, b - t + 2 * pad
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((pad - l, pad - t), text, font=fnt, fill=color + (255,))
    chars = np.zeros((h, w), np.int32)
    alpha = np.asarray(layer)[..., 3] > 0
    for i, c in enumerate(text):
        if c == " ":
            continue
        x0 = fnt.getlength(text[:i]) if i else 0.0
        x1 = fnt.getlength(text[:i + 1])
        cols = slice(max(0, int(x0 - l + pad)), min(w, int(math.ceil(x1 - l + pad))))
        # the character's pixels; its whole cell where the glyph is thin, so a patch on a stroke gap still names it
        cell = chars[:, cols]
        cell[...] = vocab.char_index.get(c, 0)
    chars[~alpha.any(axis=1), :] = 0  # rows above and below the ink
    return layer, chars, alpha


def char_spans(text, fnt):
    """Each character's [start, end) along the text as fractions of the whole advance."""
    total = max(fnt.getlength(text), 1e-6)
    ends = [fnt.getlength(text[:i + 1]) / total for i in range(len(text))]
    return tuple(zip([0.0] + ends[:-1], ends))


def _rotate(layer, deg, resample=Image.BICUBIC):
    return layer.rotate(deg, resample=resample, expand=True)


def _place(rng, placed, w, h, lw, lh, margin=4):
    for _ in range(30):
        if lw + 2 * margin > w or lh + 2 * margin > h:
            return None
        x, y = rng.randint(margin, w - lw - margin), rng.randint(margin, h - lh - margin)
        if all(x + lw + margin <= a or x >= c + margin or y + lh + margin <= b or y >= d + margin
               for a, b, c, d in placed):
            return x, y
    return None


def make_scene(rng, spec, vocab, with_labels=True):
    w, h = rng.choice(spec.sizes)
    bg = _background(rng, w, h, spec.noise)
    img = Image.fromarray(bg.astype(np.uint8), "RGB").convert("RGBA")
    labels = np.zeros((h, w, 3), np.int16) if with_labels else None
    n = rng.randint(spec.min_items, spec.max_items)
    kinds = ["text"] * spec.min_text + ["shape"] * spec.min_shapes
    kinds += ["text" if rng.random() < spec.text_share else "shape" for _ in range(max(0, n - len(kinds)))]
    rng.shuffle(kinds)
    items, placed = [], []
    scale = min(w, h) / 448
    for kind in kinds:
        deg = rng.uniform(-spec.rotate_deg, spec.rotate_deg) if rng.random() < 0.5 else 0.0
        if kind == "shape":
            shape, color = rng.choice(SHAPES), rng.choice(COLOR_NAMES)
            side = int(rng.uniform(28, 120) * max(scale, 0.5))
            sw, sh = (side, side) if shape in ("circle", "square") or rng.random() < 0.5 else \
                (side, int(side * rng.uniform(0.6, 1.4)))
            layer, mask = _layer_shape(rng, shape, color, (max(sw, 8), max(sh, 8)))
            layer, mask = _rotate(layer, deg), _rotate(mask, deg, Image.NEAREST)
            cls = (1 + SHAPES.index(shape), 1 + COLOR_NAMES.index(color), 0)
            item = Item("shape", shape=shape, color=color)
        else:
            korean = rng.random() < spec.hangul_share
            fonts = [f for f, has_ko in FONTS if has_ko or not korean]
            text = vocab.phrase(rng, korean, spec.max_words)
            size = rng.randint(spec.min_font, spec.max_font)
            fnt = font(rng.choice(fonts), size)
            if fnt.getlength(text) + 12 > w:
                continue
            under = bg.mean() if rng.random() < 0.3 else None
            dark = (under > 128) if under is not None else rng.random() < 0.5
            color = tuple(rng.randint(0, 60) for _ in range(3)) if dark else tuple(rng.randint(200, 255) for _ in range(3))
            layer, chars, alpha = _layer_text(text, fnt, color, vocab)
            plate = rng.random() < 0.5   # a sign: the text on a plate of the contrasting tone
            if plate:
                pw, ph = layer.size[0] + 8, layer.size[1] + 8
                back = Image.new("RGBA", (pw, ph), tuple(255 - c for c in color) + (255,))
                back.alpha_composite(layer, (4, 4))
                big, ink = np.zeros((ph, pw), np.int32), np.zeros((ph, pw), bool)
                big[4:4 + chars.shape[0], 4:4 + chars.shape[1]] = chars
                ink[4:4 + chars.shape[0], 4:4 + chars.shape[1]] = alpha
                layer, chars, alpha = back, big, ink
            layer = _rotate(layer, deg)
            mask = _rotate(Image.fromarray(alpha.astype(np.uint8) * 255), deg, Image.NEAREST)
            char_map = np.asarray(_rotate(Image.fromarray(chars), deg, Image.NEAREST))
            item = Item("text", text=text, korean=any(is_hangul(c) for c in text), chars=char_spans(text, fnt))
            cls = None
        lw, lh = layer.size
        pos = _place(rng, placed, w, h, lw, lh)
        if pos is None:
            continue
        x, y = pos
        img.alpha_composite(layer, (x, y))
        ink = np.asarray(mask) > 0   # a text's box is its ink's, not its plate's
        ys, xs = np.nonzero(ink)
        if len(xs) == 0:
            continue
        item.box = (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
        placed.append((x, y, x + lw, y + lh))
        items.append(item)
        if labels is not None:
            region = labels[y:y + lh, x:x + lw]
            if cls is not None:
                region[ink, 0], region[ink, 1] = cls[0], cls[1]
            else:
                cells = char_map > 0   # a character's advance cell, clipped to the text's ink box
                cells[:, :int(xs.min())] = False
                cells[:, int(xs.max()) + 1:] = False
                cells[:int(ys.min())] = False
                cells[int(ys.max()) + 1:] = False
                region[cells, 2] = char_map[cells]
    out = img.convert("RGB")
    if spec.noise > 0:
        if rng.random() < 0.4:
            out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * spec.noise))
        if rng.random() < 0.3:
            arr = np.asarray(out, np.float32) + _noise(rng, h, w) * np.float32(rng.uniform(2, 10) * spec.noise)
            out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if rng.random() < 0.2:
            import io
            buf = io.BytesIO()
            out.save(buf, "JPEG", quality=rng.randint(40, 90))
            out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return Scene(out, items, labels)


def reading_order(items, h):
    """Text items top to bottom, then left to right within a line (centres within half a line height)."""
    texts = [it for it in items if it.kind == "text"]
    texts.sort(key=lambda it: (it.box[1] + it.box[3]) / 2)
    lines, cur = [], []
    for it in texts:
        cy = (it.box[1] + it.box[3]) / 2
        if cur and abs(cy - sum((c.box[1] + c.box[3]) / 2 for c in cur) / len(cur)) > 0.5 * (it.box[3] - it.box[1]):
            lines.append(cur)
            cur = []
        cur.append(it)
    if cur:
        lines.append(cur)
    return [it for line in lines for it in sorted(line, key=lambda it: it.box[0])]
